// payload_stage.h — compression and exchange for codecs that are not selections: quantizers
// and signs (Gather), casts (Sum), multi-round protocols such as PowerSGD (Rounds); payload.h.
//
//   encode_payloads:   per Gather/Sum tensor, acc = g + e (error feedback), payload = C(acc)
//                      with the plugin's state, e = acc − D(own payload): before any
//                      communication, like every residual here. Rounds tensors get their acc.
//   exchange_payloads: Gather and Sum through PayloadExchange, each with the size the plugin's
//                      cost model declared; Rounds one tensor after the other, in parameter
//                      order, each through a RoundCollective; then e = acc − approximation.
// Each tensor ends with its average in TensorStep::average, applied by sgd_update like a dense
// one (momentum on the average: DGC's masking needs a selection, step_plan.h), or by
// adamw_update.
// The plugin's state lives in the parameter's CompressionMemory::plugin_state, created from its
// state_specs() as zeros the first time (or restored from a checkpoint).
//
// Internal to core/src/optim. It will not route (step_plan) or apply updates (sgd_update).
#pragma once

#include "step_plan.h"

#include <cddp/compression_stats.h>
#include <cddp/payload_exchange.h>

namespace cddp::detail {

void encode_payloads(RoutedTensors& routed, int64_t step, int world, StepStats& stats);
void exchange_payloads(RoutedTensors& routed, PayloadExchange& exchange, Communicator& comm, int64_t step,
                       StepStats& stats);

// t's plugin state, created from the compressor's state_specs() the first time; a checkpoint's
// state that does not match the specs (another plugin or shape) is a clear error.
PluginState& plugin_state_of(TensorStep& t);

}  // namespace cddp::detail
