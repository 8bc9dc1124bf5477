// compressed_sgd.h — SGD whose gradient exchange is compressed, with error feedback.
//
// A torch::optim::Optimizer in the shape of LibTorch's own sgd.h: an Options type, a
// ParamState type (momentum buffer + this rank's residual, created lazily and serialized
// with torch::save/torch::load), and step(). Inside step(), per parameter:
//     g   = grad + weight_decay·p
//     acc = g + residual                      (error feedback; residual is local)
//     sent = C(acc); residual = acc − D(sent) (before any communication)
// then the sparse selections are averaged across ranks (GradientExchange) and applied. With
// momentum_mode "dgc" (the default) momentum is corrected locally before compression, as in
// Deep Gradient Compression; with "global" it is applied to the averaged gradient, as SGD does.
//
// It will not pick a compressor, load plugins, log, or own the process group: those arrive
// through Options (a Compressor, a Communicator) and results leave through stats().
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>
#include <cddp/gradient_exchange.h>

#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cddp {

// Per-parameter override, matched against parameter names with a glob ('*', '?').
struct CompressionRule {
  std::string match;
  std::shared_ptr<Compressor> compressor;  // null: keep the default compressor
  double density = -1;                     // <0: keep
  int error_feedback = -1;                 // -1 keep, 0 off, 1 on
  bool dense = false;                      // true: never compress matching parameters
};

struct CompressedSGDOptions : public torch::optim::OptimizerCloneableOptions<CompressedSGDOptions> {
  CompressedSGDOptions(double lr = 0.01);
  TORCH_ARG(double, lr);
  TORCH_ARG(double, momentum) = 0;
  TORCH_ARG(double, dampening) = 0;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(bool, nesterov) = false;
  // The compressor for every parameter not routed dense; null means dense training.
  TORCH_ARG(std::shared_ptr<Compressor>, compressor) = nullptr;
  // Density handed to the compressor each step (CompressContext::ratio); <0: its own.
  TORCH_ARG(double, density) = -1;
  TORCH_ARG(bool, error_feedback) = true;
  // true: keeps the residual in units of the current learning rate — when lr changes from lr'
  // to lr the residual is multiplied by lr'/lr, so lr·residual, the parameter change still
  // owed, is unchanged. Error feedback as published stores the lr-scaled update (Stich et al.
  // 2018, "Sparsified SGD with memory"; Karimireddy et al. 2019, "Error feedback fixes
  // SignSGD"). false (default): the residual is left as it is, so what was held back while lr
  // was high is applied at the later, lower lr — a decay of stale gradient that measured
  // better: docs/results.md, 2.0 points better at 94 steps of a cosine schedule, 0.1 worse at
  // 470. No effect at a constant lr.
  TORCH_ARG(bool, residual_lr_scaling) = false;
  // "dgc" (default): momentum corrected locally before compression, with momentum factor
  // masking — Lin et al. 2018; in docs/results.md it ended 1.9–2.2 points above "global" in
  // every top-k run (1 % and 0.1 %, 94 steps) and 2.2 above on the main job.
  // "global": momentum on the averaged sparse gradient, exactly torch::optim::SGD's update
  // (bitwise equal to it at ratio 1). Tensors on the dense route always use "global".
  TORCH_ARG(std::string, momentum_mode) = "dgc";
  // "error": a NaN/Inf gradient throws, naming parameter and step. "skip_step": nothing changes.
  TORCH_ARG(std::string, nonfinite) = "error";
  // "layer": top-k per tensor. "model": one selection over all compressible gradients.
  TORCH_ARG(std::string, scope) = "layer";
  // Dense-routing policy: tensors smaller than min_numel, 1-D tensors (biases, norms) when
  // compress_1d is false, and tensors whose sparse exchange would cost at least as many bytes
  // as a dense ring allreduce (W·density ≥ 1) when auto_dense is true.
  TORCH_ARG(int64_t, min_numel) = 0;
  TORCH_ARG(bool, compress_1d) = true;
  TORCH_ARG(bool, auto_dense) = true;
  TORCH_ARG(std::vector<CompressionRule>, rules) = {};
  TORCH_ARG(int64_t, seed) = 0;
  // How the sparse route's indices travel: "block16" (default; 2 bytes an index plus 4 bytes per
  // 65,536 entries, see IndexCoding) or "plain" (int32). Changes bytes, never results. A wire
  // setting, not state: like the compressor it is not saved, and every rank must agree on it.
  TORCH_ARG(std::string, index_coding) = "block16";
  // How ranks talk; null means a LocalCommunicator (world size 1).
  TORCH_ARG(std::shared_ptr<Communicator>, communicator) = nullptr;
  // Compute the residual norm into StepStats (one extra pass over residuals).
  TORCH_ARG(bool, track_residual_norm) = false;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

struct CompressedSGDParamState : public torch::optim::OptimizerCloneableParamState<CompressedSGDParamState> {
  TORCH_ARG(at::Tensor, momentum_buffer);  // "global": SGD's buffer; "dgc": the velocity u
  TORCH_ARG(at::Tensor, residual);         // error-feedback memory e, this rank only
  TORCH_ARG(double, residual_lr) = 0;      // the lr residual is expressed at (0: none yet)

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

// How a parameter's gradient travels. Decided per tensor at its first step.
enum class Route { Sparse, SharedIndices, Dense };
const char* route_name(Route r);

struct RoutingDecision {
  std::string name;
  Route route;
  std::string reason;
};

class CompressedSGD : public torch::optim::Optimizer {
 public:
  static constexpr int64_t kFormatVersion = 2;  // 2: residual_lr, residual_lr_scaling

  CompressedSGD(std::vector<std::pair<std::string, at::Tensor>> named_params, CompressedSGDOptions options);
  CompressedSGD(std::vector<at::Tensor> params, CompressedSGDOptions options);

  at::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  const StepStats& last_step_stats() const { return last_; }
  const CumulativeStats& cumulative_stats() const { return total_; }
  // Routing decisions made so far, in the order first made (for logging them once).
  const std::vector<RoutingDecision>& routing() const { return routing_log_; }
  int64_t step_count() const { return step_; }

  // Overrides the density of every compressed tensor from the next step on (warm-up
  // schedules); <0 restores the configured density.
  void set_density(double density) { density_override_ = density; }
  const CompressedSGDOptions& defaults_options() const;

 private:
  struct Item;
  template <typename Self, typename Archive>
  static void serialize(Self& self, Archive& archive) {
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(CompressedSGD);
  }
  CompressedSGDParamState& state_for(const at::Tensor& p);
  Route route_for(const Item& item, std::string& reason) const;
  bool nonfinite_skip(const std::vector<Item>& items);  // throws for nonfinite = "error"

  std::vector<std::string> names_;  // parallel to the flattened parameter list
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<GradientExchange> exchange_;  // over *comm_; keeps its byte buffers between steps
  std::map<std::string, Route> routes_;
  std::vector<RoutingDecision> routing_log_;
  StepStats last_;
  CumulativeStats total_;
  int64_t step_ = 0;
  double density_override_ = -1;
  // Per compressed tensor, reused each step: the averaged gradient, and (sparse route) the
  // SparseOutputState that lets it stay zero between steps, so a step re-zeroes only the O(k·W)
  // entries the previous step wrote instead of the whole tensor. step() only READS these
  // buffers after the exchange (momentum clones/accumulates into its own buffer, the update
  // reads d_p): anything that writes into one must reset() its state first.
  // With momentum_mode "dgc" on a CPU float/double parameter the average arrives instead as a
  // coalesced list (`coalesced`), applied to the O(k·W) entries it names; `tensor` is never allocated.
  struct AverageBuffer {
    at::Tensor tensor;
    SparseOutputState zeros;
    SparseAverage coalesced;
  };
  std::map<std::string, AverageBuffer> average_buffers_;
};

// Shell-style glob match ('*' any run, '?' one character), used for rules and skip lists.
bool glob_match(const std::string& pattern, const std::string& text);

}  // namespace cddp
