// compression_stage.h — each rank's selection, before any communication: per tensor (scope
// "layer"), or once over every tensor on the sparse route flattened together (scope "model").
// For each compressed tensor:
//     source = g, or the DGC velocity           (dgc_momentum.h)
//     sent   = C(source + e);  e = acc − D(sent) (error_feedback.h)
//     DGC momentum factor masking of sent        (dgc_momentum.h)
// Internal to core/src/optim. It will not route tensors (step_plan.h) or communicate
// (exchange_stage.h); tensors on the dense route are only counted.
#pragma once

#include "step_plan.h"
#include "typed_options.h"

#include <cddp/compression_stats.h>

#include <memory>
#include <vector>

namespace cddp::detail {

// scope "model": the virtual whole-model tensor. Its gradient and residual are the sparse
// tensors' concatenated in order; after compression its residual is written back into theirs,
// and after the exchange its average is split back into theirs (split_model_average). It takes
// its compressor, density, error feedback, options and seed from the first part (the option
// checks make groups agree on those; rules that change them for later parts are not applied).
struct ModelSelection {
  std::vector<TensorStep*> parts;   // the tensors it covers, in parameter order
  std::unique_ptr<TensorStep> whole;
  std::unique_ptr<CompressedSGDParamState> state;  // whole's: the concatenated residual
  bool used() const { return whole != nullptr; }
};

// Compresses every tensor of routed.sparse (as one whole-model selection when `scope` is Model,
// after which routed.sparse holds only the whole) and routed.shared, counting elements_sent,
// compressed_tensors and dense_tensors into `stats`. `step` counts from 1.
ModelSelection compress_routed(RoutedTensors& routed, SelectionScope scope, int64_t step, int world,
                               StepStats& stats);

// scope "model", after the exchange: each part's average, a view of the whole one.
void split_model_average(ModelSelection& model);

}  // namespace cddp::detail
