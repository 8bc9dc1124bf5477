// exchange_stage.h — the mean over ranks of every tensor's selection (or dense gradient),
// through GradientExchange: one sparse allgather for the sparse route, one allreduce of values
// for the shared-indices route, one flattened allreduce for the dense route. Afterwards every
// TensorStep has its `average`, or its `coalesced` list when the update can apply it sparsely.
//
// Internal to core/src/optim. It will not compress, apply momentum or touch a parameter; the
// averages it hands out are read-only (the update reads them, see SparseOutputState).
#pragma once

#include "compression_stage.h"
#include "step_plan.h"

#include <cddp/compression_stats.h>
#include <cddp/gradient_exchange.h>

#include <map>
#include <string>
#include <vector>

namespace cddp::detail {

class ExchangeStage {
 public:
  // Fills t.average (or t.coalesced) of every routed tensor; with a whole-model selection,
  // each part's average is its slice of the whole one.
  void run(RoutedTensors& routed, ModelSelection& model, GradientExchange& exchange, int world, StepStats& stats);

 private:
  std::vector<SparseSlot> slots_for(const std::vector<TensorStep*>& tensors, bool keep_zero, bool model_used);

  // Per compressed tensor (by name), reused each step: a fresh tensor would be page-faulted in
  // on every step (~100 ms for 25M floats), more than the sparse exchange itself costs. On the
  // sparse route the SparseOutputState keeps `tensor` zero between steps outside the entries
  // last written, so a step re-zeroes only those O(k·W) entries. The update only READS these
  // buffers: anything that writes into one must reset() its state first. When the update
  // applies the average sparsely the exchange writes `coalesced` and `tensor` is never allocated.
  struct AverageBuffer {
    at::Tensor tensor;
    SparseOutputState zeros;
    SparseAverage coalesced;
  };
  std::map<std::string, AverageBuffer> buffers_;
};

}  // namespace cddp::detail
