// compressed_adamw.h — AdamW (Loshchilov & Hutter, ICLR 2019) whose exchange is compressed,
// with error feedback, in two modes:
//
//   "onebit" (default): 1-bit Adam (Tang et al., ICML 2021, "1-bit Adam: communication
//     efficient large-scale training with Adam's convergence speed", Algorithm 1). Dense AdamW
//     for warmup_steps; then the variance v is frozen, which makes the update linear in the
//     momentum, and the momentum is what is compressed, with error feedback on each rank:
//         m_local = β1·m + (1 − β1)·g              (this rank's gradient, the shared m)
//         sent = C(m_local + e);  e = m_local + e − D(sent)   before any communication
//         m = mean over ranks of D(sent)           (identical on every rank)
//         p ← p·(1 − lr·λ) − lr/(1 − β1^t) · m / (√v_frozen / √(1 − β2^T) + ε)
//     T is the step the variance froze at (its bias correction freezes with it); t keeps
//     counting, as in AdamW. Unlike the paper's implementation (DeepSpeed) the exchange is
//     exact on what was sent (every rank's payload is decoded and averaged), so there is one
//     error-feedback memory per rank, not a worker and a server one; and any plugin of the ABI
//     (gather, sum, rounds kinds) can compress the momentum.
//   "naive": Adam on the averaged compressed gradient ĝ — the control the paper argues
//     against: both moments are built from ĝ, e is the gradient's residual.
//
// Tensors on the dense route (no compressor, a rule, min_numel, compress_1d, auto_dense) run
// plain AdamW on the exactly averaged gradient in either mode; once a tensor's variance is
// frozen it stays frozen (a later dense step feeds its averaged gradient into m only).
// With no compressor, both modes are torch::optim::AdamW's step, bitwise (tested over 50 steps).
//
// State per parameter (CompressedAdamWParamState): step, exp_avg, exp_avg_sq (frozen in
// onebit once variance_frozen_at > 0), max_exp_avg_sq (amsgrad, naive only), and the
// CompressionMemory (residual, plugin state); all saved per rank, and restored as they were:
// nothing is reset on load.
//
// step() drives the stages of core/src/optim/ that CompressedSGD drives (step_plan,
// nonfinite_guard, error_feedback, compression_stage, payload_stage, exchange_stage) and its own
// update, adamw_update. It will not pick a compressor, load plugins, log, or own the process
// group.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compressed_optimizer.h>
#include <cddp/compressed_sgd.h>
#include <cddp/compression_memory.h>
#include <cddp/compressor.h>
#include <cddp/option_defaults.h>

#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace cddp {

struct CompressedAdamWOptions : public torch::optim::OptimizerCloneableOptions<CompressedAdamWOptions> {
  CompressedAdamWOptions(double lr = 1e-3);
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(defaults::kAdamBeta1, defaults::kAdamBeta2);
  TORCH_ARG(double, eps) = defaults::kAdamEps;
  TORCH_ARG(double, weight_decay) = 1e-2;  // decoupled: p ← p·(1 − lr·λ), as torch::optim::AdamW
  TORCH_ARG(bool, amsgrad) = defaults::kAmsgrad;     // "naive" only: a frozen variance has no running max
  // "onebit" or "naive" (see above). Optimizer-wide; parsed at construction.
  TORCH_ARG(std::string, mode) = defaults::kAdamWMode;
  // onebit: optimizer steps of dense AdamW before the variance freezes (>= 1; the paper's
  // guidance is ~15-25 % of training; DeepSpeed calls it freeze_step). Optimizer-wide.
  TORCH_ARG(int64_t, warmup_steps) = defaults::kOnebitWarmupSteps;
  // Compression, as in CompressedSGDOptions (same meaning, same defaults).
  TORCH_ARG(std::shared_ptr<Compressor>, compressor) = nullptr;
  TORCH_ARG(double, density) = -1;
  TORCH_ARG(bool, error_feedback) = defaults::kErrorFeedback;
  TORCH_ARG(int64_t, min_numel) = defaults::kLibraryMinNumel;
  TORCH_ARG(bool, compress_1d) = defaults::kCompress1d;
  TORCH_ARG(bool, auto_dense) = defaults::kAutoDense;
  TORCH_ARG(std::vector<CompressionRule>, rules) = {};
  TORCH_ARG(int64_t, seed) = 0;
  TORCH_ARG(std::string, nonfinite) = defaults::kNonfinite; // optimizer-wide
  TORCH_ARG(std::string, index_coding) = defaults::kIndexCoding;  // optimizer-wide
  TORCH_ARG(std::shared_ptr<Communicator>, communicator) = nullptr;  // optimizer-wide
  TORCH_ARG(bool, track_residual_norm) = false;
  // Param groups may set lr, betas, eps, weight_decay, amsgrad and the compression options
  // (compressor, density, error_feedback, min_numel, compress_1d, auto_dense, rules, seed);
  // mode, warmup_steps, nonfinite, index_coding and communicator are read from defaults().

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

struct CompressedAdamWParamState : public torch::optim::OptimizerCloneableParamState<CompressedAdamWParamState>,
                                   public CompressionMemory {
  TORCH_ARG(int64_t, step) = 0;
  TORCH_ARG(at::Tensor, exp_avg);
  TORCH_ARG(at::Tensor, exp_avg_sq);
  TORCH_ARG(at::Tensor, max_exp_avg_sq) = {};
  // onebit: the step whose exp_avg_sq is frozen (its bias correction too); 0 while not frozen.
  TORCH_ARG(int64_t, variance_frozen_at) = 0;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

namespace detail {
struct AdamWSettings;  // the option strings, parsed (compressed_adamw.cpp)
}  // namespace detail

class CompressedAdamW : public CompressedOptimizer {
 public:
  static constexpr int64_t kFormatVersion = 1;

  CompressedAdamW(std::vector<std::pair<std::string, at::Tensor>> named_params, CompressedAdamWOptions options);
  CompressedAdamW(std::vector<at::Tensor> params, CompressedAdamWOptions options);
  // Groups with options of their own; parameters are named param0, param1, ... in order.
  CompressedAdamW(std::vector<torch::optim::OptimizerParamGroup> param_groups, CompressedAdamWOptions defaults);
  ~CompressedAdamW() override;

  at::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  // Refuses, naming what it found, a state that is not a CompressedAdamW one or has another
  // format version.
  void load(torch::serialize::InputArchive& archive) override;

  void set_track_residual_norm(bool on) override;
  const CompressedAdamWOptions& defaults_options() const;
  // The state of parameter `p`, or null before its first step (for reading checkpoints).
  const CompressedAdamWParamState* find_state(const at::Tensor& p) const;
  // True once the onebit warm-up is over (the next step compresses the momentum).
  bool variance_frozen() const;

 private:
  template <typename Self, typename Archive>
  static void serialize(Self& self, Archive& archive) {
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(CompressedAdamW);
  }
  CompressedAdamWParamState& state_for(const at::Tensor& p);
  void adopt_new_param_groups();

  std::unique_ptr<detail::AdamWSettings> settings_;
  size_t groups_checked_ = 0;
};

}  // namespace cddp
