// compressed_optimizer.h — the part every optimizer of compressed-ddp shares: what the last step
// moved, running totals, where each tensor travelled, the step count, the two knobs a training
// loop turns between steps (a density warm-up, the residual norm on logged steps), and the
// bookkeeping behind them: parameter names, the communicator and the exchanges over it.
// CompressedSGD and CompressedAdamW derive from it, so a trainer holds either through one
// pointer and neither writes that bookkeeping again.
//
// It does no step, no update and no serialization of its own: those are the derived class's.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/gradient_exchange.h>
#include <cddp/payload_exchange.h>

#include <torch/optim/optimizer.h>

#include <cstdint>
#include <map>
#include <memory>
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

namespace detail {
class PayloadBuffers;  // per-tensor buffers of the payload stage (core/src/optim/payload_buffers.h)
}  // namespace detail

class CompressedOptimizer : public torch::optim::Optimizer {
 public:
  ~CompressedOptimizer() override;

  const StepStats& last_step_stats() const { return last_; }
  const CumulativeStats& cumulative_stats() const { return total_; }
  // Routing decisions made so far, in the order first made (for logging them once).
  const std::vector<RoutingDecision>& routing() const { return routing_log_; }
  int64_t step_count() const { return step_; }
  // Overrides the density of every compressed tensor from the next step on (warm-up
  // schedules); <0 restores the configured density.
  void set_density(double density) { density_override_ = density; }
  // How compression.exchange = "auto" chose the sparse exchange and why (one line), once it
  // has; "" before that, and for an optimizer or a setting that has no such choice.
  const std::string& exchange_decision() const { return exchange_decision_; }

  // Computes StepStats::residual_norm at the following steps (one extra pass over residuals).
  virtual void set_track_residual_norm(bool on) = 0;
  // Gradient accumulation with an exchange that overlaps backward: false before the backward of
  // every micro-batch but the last. A no-op for optimizers that do not overlap.
  virtual void set_last_micro_batch(bool /*last*/) {}

 protected:
  // The parameters of one group, and the names param0, param1, ... of unnamed parameters.
  static std::vector<at::Tensor> tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named);
  static std::vector<std::pair<std::string, at::Tensor>> auto_named(const std::vector<at::Tensor>& params);

  CompressedOptimizer(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                      std::unique_ptr<torch::optim::OptimizerOptions> defaults);
  // For the derived constructor, once its options are checked: the communicator (null means a
  // LocalCommunicator, world size 1) and the exchanges over it.
  void connect_exchanges(std::shared_ptr<Communicator> communicator, const ExchangeWire& wire);
  // Ends a step in the stats; a skipped one (non-finite gradients) leaves the step count.
  void record_step(const StepStats& st);
  void record_skipped_step(StepStats& st);

  std::vector<std::string> names_;  // parallel to the flattened parameter list
  std::shared_ptr<Communicator> comm_;
  // Over *comm_; keeps its byte buffers and every tensor's average buffer between steps.
  std::unique_ptr<GradientExchange> exchange_;
  std::unique_ptr<PayloadExchange> payloads_;                // over *comm_: codecs that are not selections
  std::unique_ptr<detail::PayloadBuffers> payload_buffers_;  // their per-tensor buffers, step to step
  std::map<std::string, Route> routes_;
  std::vector<RoutingDecision> routing_log_;
  StepStats last_;
  CumulativeStats total_;
  std::string exchange_decision_;
  int64_t step_ = 0;
  double density_override_ = -1;
};

}  // namespace cddp
