// exchange_stage.h — the mean over ranks of every tensor's selection (or dense gradient),
// through GradientExchange: one sparse allgather for the sparse route, one allreduce of values
// for the shared-indices route, one flattened allreduce for the dense route. Afterwards every
// TensorStep has its `average`, or its `coalesced` list when the update can apply it sparsely.
//
// The averages of compressed tensors are the exchange's, kept per parameter name and reused
// step after step (GradientExchange's AverageOf); this stage only points each tensor at its
// own. Internal to core/src/optim. It will not compress, apply momentum or touch a parameter,
// and it never writes into an average.
#pragma once

#include "compression_stage.h"
#include "step_plan.h"

#include <cddp/compression_stats.h>
#include <cddp/gradient_exchange.h>

#include <string>

namespace cddp::detail {

// Exchange "auto": chooses the sparse route's algorithm once, at the first exchange that has
// sparse tensors (serially every tensor's; with overlap the first bucket's that holds some),
// from their selections' counts summed over the ranks, so every rank chooses the same. Sets
// `decided` and writes the reason into `why`; does nothing once decided or at world size 1.
void decide_exchange_once(const RoutedTensors& routed, GradientExchange& exchange, int world, bool& decided,
                          std::string& why);

// Fills t.average (or t.coalesced) of every routed tensor; with a whole-model selection, each
// part's average is its slice of the whole one.
void exchange_averages(RoutedTensors& routed, ModelSelection& model, GradientExchange& exchange, int world,
                       StepStats& stats);

}  // namespace cddp::detail
