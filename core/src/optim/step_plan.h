// step_plan.h — planning a step of CompressedSGD or CompressedAdamW: which gradients take part,
// with which compressor, density and error feedback (the group's options, then the rules), and
// how each travels (its Route), by the wire-cost model of core/src/exchange/wire_cost.h.
//
// TensorStep is one parameter's record for the step; every later stage reads what planning put
// there and adds what it produced (the selection, the average). The stages shared by both
// optimizers read only its optimizer-neutral fields (knobs, memory, g); `opt` and `state` are
// CompressedSGD's and null under CompressedAdamW. Internal to core/src/optim.
//
// It will not change a gradient, a parameter or optimizer state, and does not communicate.
#pragma once

#include <cddp/compressed_sgd.h>
#include <cddp/compression_memory.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>
#include <cddp/gradient_exchange.h>

#include "typed_options.h"

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cddp::detail {

// A param group's compression options, whichever optimizer's options they come from (both
// spell them alike: knobs_of below), read by routing, error feedback and the compressor context.
struct CompressionKnobs {
  std::shared_ptr<Compressor> compressor;
  double density = -1;
  bool error_feedback = true;
  const std::vector<CompressionRule>* rules = nullptr;  // the group's; lives as long as the group
  int64_t seed = 0;
  int64_t min_numel = 0;
  bool compress_1d = true;
  bool auto_dense = true;
  bool residual_lr_scaling = false;
  double lr = 0;
};

template <class Options>
CompressionKnobs knobs_of(const Options& o) {
  CompressionKnobs k;
  k.compressor = o.compressor();
  k.density = o.density();
  k.error_feedback = o.error_feedback();
  k.rules = &o.rules();
  k.seed = o.seed();
  k.min_numel = o.min_numel();
  k.compress_1d = o.compress_1d();
  k.auto_dense = o.auto_dense();
  k.lr = o.lr();
  return k;
}

struct TensorStep {
  // Planning (collect_gradients, route_tensors):
  at::Tensor p;                        // the parameter
  at::Tensor g;                        // its gradient, g = grad + weight_decay·p
  std::string name;                    // for rules, routing and messages
  int64_t index = 0;                   // in the flattened parameter list (CompressContext::param_index)
  size_t group = 0;                    // its param group, in param_groups() order
  CompressionKnobs knobs;              // its group's compression options
  CompressionMemory* memory = nullptr;  // residual and plugin state (any optimizer's ParamState)
  const CompressedSGDOptions* opt = nullptr;  // CompressedSGD only: its param group's options
  MomentumMode momentum_mode = MomentumMode::Global;  // CompressedSGD: its group's, parsed
  CompressedSGDParamState* state = nullptr;        // CompressedSGD only: momentum buffer
  std::shared_ptr<Compressor> compressor;          // the group's, or a rule's; null: dense
  double density = -1;                 // CompressContext::ratio; <= 0: the compressor's own
  bool error_feedback = true;
  bool forced_dense = false;           // a rule (or the optimizer, with forced_dense_reason) says dense
  std::string forced_dense_reason;     // empty: "a rule marks it dense"
  Route route = Route::Dense;
  // Compression (compression_stage): this rank's selection, or (Gather, Sum) its payload; for
  // Rounds, acc = source + residual, which the rounds (payload_stage) approximate.
  Compressed sent;
  Payload payload;
  at::Tensor acc;
  // Exchange (exchange_stage): the mean over ranks of what was sent, as a [numel] contiguous
  // tensor, or (when set and valid) as a coalesced list of the entries any rank sent.
  at::Tensor average;
  const SparseAverage* coalesced = nullptr;

  // DGC: momentum is accumulated locally before compression (dgc_momentum.h) rather than on
  // the average after the exchange (sgd_update.h). Never on the dense route.
  // Only selections: DGC's momentum-factor masking needs the entries sent, and a quantizer or
  // a low-rank codec sends every entry; their momentum runs on the average, as SGD's does.
  bool momentum_before_compression() const {
    return momentum_mode == MomentumMode::Dgc && is_selection() && opt && opt->momentum() != 0;
  }
  bool is_selection() const { return route == Route::Sparse || route == Route::SharedIndices; }
  bool is_payload() const { return route == Route::Gather || route == Route::Sum || route == Route::Rounds; }
};

// What the compressor is told about t at optimizer step `step` among `world` ranks.
CompressContext context_for(const TensorStep& t, int64_t step, int world);

// One parameter's record with g = its gradient, its knobs, and compressor, density and error
// feedback resolved: the group's, then the rules matching its name, in order.
// `density_override` > 0 (set_density) replaces every density.
TensorStep plan_tensor(const at::Tensor& p, int64_t index, size_t group, const std::vector<std::string>& names,
                       const CompressionKnobs& knobs, double density_override);

// CompressedSGD: every parameter with a gradient, in param_groups() order, planned by
// plan_tensor, with g = grad + weight_decay·p (as torch::optim::SGD computes it).
// `only` (per flat parameter index, non-zero: take part): a subset, such as one overlap bucket.
std::vector<TensorStep> collect_gradients(std::vector<torch::optim::OptimizerParamGroup>& groups,
                                          const StepSettings& settings, const std::vector<std::string>& names,
                                          double density_override, const std::vector<char>* only = nullptr);

// The tensors of each route, in parameter order.
struct RoutedTensors {
  std::vector<TensorStep*> sparse;  // allgather of values and indices
  std::vector<TensorStep*> shared;  // indices equal on every rank: allreduce of the values
  std::vector<TensorStep*> dense;   // ring allreduce of the whole gradient
  std::vector<TensorStep*> gather, sum, rounds;  // payloads of codecs that are not selections
};

// Where each routing decision is remembered, and logged when it is new or changes.
struct RoutingMemory {
  std::map<std::string, Route>& current;
  std::vector<RoutingDecision>& log;
};

// Routes every tensor (route_for), records the decisions, and counts elements_in and
// bytes_dense_equivalent into `stats`.
RoutedTensors route_tensors(std::vector<TensorStep>& tensors, int world, IndexCoding coding, RoutingMemory memory,
                            StepStats& stats);

// One tensor's route and why: dense when it has no compressor, a rule says so, it is under
// min_numel, it is 1-D and compress_1d is off, or (auto_dense) its sparse exchange would cost
// at least as many bytes as a dense one.
Route route_for(const TensorStep& t, int world, IndexCoding coding, std::string& reason);

}  // namespace cddp::detail
