// compressed_optimizer.h — what every optimizer of compressed-ddp tells its caller besides
// torch::optim::Optimizer's own interface: what the last step moved, running totals, where each
// tensor travelled, the step count, and the two knobs a training loop turns between steps (a
// density warm-up, the residual norm on logged steps). CompressedSGD and CompressedAdamW
// implement it, so a trainer can hold either through one pointer.
//
// It holds no state and does no work: no step, no communication, no serialization of its own.
#pragma once

#include <cddp/compression_stats.h>

#include <torch/optim/optimizer.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cddp {

// How a parameter's gradient travels. Decided per tensor at each step.
//   Sparse, SharedIndices: a selection (values + indices), averaged by GradientExchange;
//   Gather, Sum, Rounds: another codec's payload (payload.h), through PayloadExchange;
//   Dense: the whole tensor, one ring allreduce.
enum class Route { Sparse, SharedIndices, Dense, Gather, Sum, Rounds };
const char* route_name(Route r);

struct RoutingDecision {
  std::string name;
  Route route;
  std::string reason;
};

class CompressedOptimizer : public torch::optim::Optimizer {
 public:
  using torch::optim::Optimizer::Optimizer;
  ~CompressedOptimizer() override = default;

  virtual const StepStats& last_step_stats() const = 0;
  virtual const CumulativeStats& cumulative_stats() const = 0;
  // Routing decisions made so far, in the order first made (for logging them once).
  virtual const std::vector<RoutingDecision>& routing() const = 0;
  virtual int64_t step_count() const = 0;
  // Overrides the density of every compressed tensor from the next step on; <0 restores it.
  virtual void set_density(double density) = 0;
  // Computes StepStats::residual_norm at the following steps (one extra pass over residuals).
  virtual void set_track_residual_norm(bool on) = 0;
  // How compression.exchange = "auto" chose the sparse exchange and why, once it has; "" when
  // the optimizer has no such choice (CompressedAdamW) or has not made it yet.
  virtual const std::string& exchange_decision() const {
    static const std::string none;
    return none;
  }
  // Gradient accumulation with an exchange that overlaps backward: false before the backward of
  // every micro-batch but the last. A no-op for optimizers that do not overlap.
  virtual void set_last_micro_batch(bool /*last*/) {}
};

}  // namespace cddp
