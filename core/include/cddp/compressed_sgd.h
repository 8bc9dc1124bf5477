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
// step() drives named stages, one file each in core/src/optim/: step_plan (gradients, rules,
// routing), nonfinite_guard, error_feedback, dgc_momentum, compression_stage, exchange_stage,
// sgd_update; typed_options checks the options and parses their strings.
//
// It will not pick a compressor, load plugins, log, or own the process group: those arrive
// through Options (a Compressor, a Communicator) and results leave through stats().
#pragma once

#include <cddp/communicator.h>
#include <cddp/compressed_optimizer.h>
#include <cddp/compression_memory.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>
#include <cddp/gradient_exchange.h>
#include <cddp/option_defaults.h>
#include <cddp/payload_exchange.h>

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
  TORCH_ARG(bool, error_feedback) = defaults::kErrorFeedback;
  // true: keeps the residual in units of the current learning rate — when lr changes from lr'
  // to lr the residual is multiplied by lr'/lr, so lr·residual, the parameter change still
  // owed, is unchanged. Error feedback as published stores the lr-scaled update (Stich et al.
  // 2018, "Sparsified SGD with memory"; Karimireddy et al. 2019, "Error feedback fixes
  // SignSGD"). false (default): the residual is left as it is, so what was held back while lr
  // was high is applied at the later, lower lr — a decay of stale gradient that measured
  // better: docs/results.md, 2.0 points better at 94 steps of a cosine schedule, 0.1 worse at
  // 470. No effect at a constant lr.
  TORCH_ARG(bool, residual_lr_scaling) = defaults::kResidualLrScaling;
  // The string options (momentum_mode, nonfinite, scope, index_coding, value_dtype, exchange) are parsed once,
  // when the optimizer is constructed or a param group added: edit them before that.
  // "dgc" (default): momentum corrected locally before compression, with momentum factor
  // masking — Lin et al. 2018; in docs/results.md it ended 1.9–2.2 points above "global" in
  // every top-k run (1 % and 0.1 %, 94 steps) and 2.2 above on the main job.
  // "global": momentum on the averaged sparse gradient, exactly torch::optim::SGD's update
  // (bitwise equal to it at ratio 1). Tensors on the dense route always use "global".
  TORCH_ARG(std::string, momentum_mode) = defaults::kMomentumMode;
  // "error": a NaN/Inf gradient throws, naming parameter and step. "skip_step": nothing changes.
  TORCH_ARG(std::string, nonfinite) = defaults::kNonfinite;
  // "layer": top-k per tensor. "model": one selection over all compressible gradients.
  TORCH_ARG(std::string, scope) = defaults::kScope;
  // Dense-routing policy: tensors smaller than min_numel, 1-D tensors (biases, norms) when
  // compress_1d is false, and tensors whose sparse exchange would cost at least as many bytes
  // as a dense ring allreduce (W·density ≥ 1) when auto_dense is true.
  // min_numel is 0 here and 32768 in cddp-train, on purpose: why, in option_defaults.h (the
  // defaults of both, in one place).
  TORCH_ARG(int64_t, min_numel) = defaults::kLibraryMinNumel;
  TORCH_ARG(bool, compress_1d) = defaults::kCompress1d;
  TORCH_ARG(bool, auto_dense) = defaults::kAutoDense;
  TORCH_ARG(std::vector<CompressionRule>, rules) = {};
  TORCH_ARG(int64_t, seed) = 0;
  // How the sparse route's indices travel: "block16" (default; 2 bytes an index plus 4 bytes per
  // 65,536 entries, see IndexCoding) or "plain" (int32). Changes bytes, never results. A wire
  // setting, not state: like the compressor it is not saved, and every rank must agree on it.
  TORCH_ARG(std::string, index_coding) = defaults::kIndexCoding;
  // How the sparse route's values travel (ValueWire): "fp32" (default: as they are), "bf16" or
  // "fp16", 2 bytes a value. The rounding goes back into this rank's residual (acc − D(rounded
  // sent)), so error feedback loses nothing; fp16 refuses a value past 65504 with an error.
  // Only the sparse (allgather-kind) route; shared-index and dense routes send their dtype.
  TORCH_ARG(std::string, value_dtype) = defaults::kValueDtype;
  // How the sparse route is averaged (SparseAlgorithm): "allgather" (default; every rank
  // receives (W−1)·k entries), "sparse_allreduce" (about 2k entries for any W: a region-wise
  // reduce-scatter and an allgather of each region's largest sums; what that re-selection drops
  // goes back into the residual of the rank that sent it), or "auto": chosen at the first step
  // by the wire-cost model over W, k and the bytes (core/src/exchange/wire_cost.h); what it chose
  // and why is exchange_decision(), for the caller to log once.
  TORCH_ARG(std::string, exchange) = defaults::kExchange;
  // How ranks talk; null means a LocalCommunicator (world size 1).
  TORCH_ARG(std::shared_ptr<Communicator>, communicator) = nullptr;
  // Compute the residual norm into StepStats (one extra pass over residuals). Read from
  // defaults() at every step (the trainer turns it on for the steps it logs).
  TORCH_ARG(bool, track_residual_norm) = false;
  // true: each bucket's compression and exchange start during backward, as soon as its
  // gradients are final (core/src/optim/overlapped_step.h: what runs when, the same bits as
  // false, the non-finite semantics). Buckets in reverse parameter order, closed at
  // bucket_cap_mb MiB of gradient, the first at first_bucket_cap_mb — PyTorch DDP's 25 and 1.
  // CPU parameters and scope "layer" only. With gradient accumulation call
  // set_last_micro_batch(false) before every backward but the last. A wire setting, not state.
  TORCH_ARG(bool, overlap) = defaults::kOverlap;
  TORCH_ARG(double, bucket_cap_mb) = defaults::kBucketCapMb;
  TORCH_ARG(double, first_bucket_cap_mb) = defaults::kFirstBucketCapMb;
  // Param groups: nonfinite, scope, index_coding, value_dtype, exchange, communicator,
  // track_residual_norm and the three overlap options are optimizer-wide, and with scope
  // "model" so are compressor, density, error_feedback and seed: a group that sets another
  // value than defaults() is refused (at construction, or at the first step after
  // add_param_group). Every other option is honoured per group.

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

// momentum_buffer, and (CompressionMemory) the residual, the lr it is expressed at and the
// compressor plugin's state (its state_specs(): PowerSGD's Q, a running scale), held here so
// that checkpoints save them beside the momentum.
struct CompressedSGDParamState : public torch::optim::OptimizerCloneableParamState<CompressedSGDParamState>,
                                 public CompressionMemory {
  TORCH_ARG(at::Tensor, momentum_buffer);  // "global": SGD's buffer; "dgc": the velocity u

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

// Route and RoutingDecision (how a tensor travels, and why): compressed_optimizer.h.

namespace detail {
struct StepSettings;  // the option strings, parsed (core/src/optim/typed_options.h)
class OverlappedStep;  // Options::overlap (core/src/optim/overlapped_step.h)
struct TensorStep;     // one parameter's record for a step (core/src/optim/step_plan.h)
}  // namespace detail

class CompressedSGD : public CompressedOptimizer {
 public:
  // 2: residual_lr, residual_lr_scaling; 3: plugin_state. Version 2 states still load.
  static constexpr int64_t kFormatVersion = 3;

  CompressedSGD(std::vector<std::pair<std::string, at::Tensor>> named_params, CompressedSGDOptions options);
  CompressedSGD(std::vector<at::Tensor> params, CompressedSGDOptions options);
  // As torch::optim::SGD's: groups with options of their own (see Options, "Param groups");
  // parameters are named param0, param1, ... in order.
  CompressedSGD(std::vector<torch::optim::OptimizerParamGroup> param_groups, CompressedSGDOptions defaults);
  ~CompressedSGD() override;

  at::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  // last_step_stats(), cumulative_stats(), routing(), step_count(), set_density() and
  // exchange_decision() (exchange "auto": the choice made at the first step with a sparse
  // tensor, and why): CompressedOptimizer.

  // With overlap: false makes the next backward passes only accumulate gradients (the
  // micro-batches of a gradient accumulation before the last); true (the default) lets the next
  // backward start the exchange. Stays as set. No effect without overlap.
  void set_last_micro_batch(bool last) override;
  // With overlap, how many buckets the parameters were split into (0 without overlap).
  size_t overlap_bucket_count() const;
  // defaults().track_residual_norm(on), which step() reads each step.
  void set_track_residual_norm(bool on) override;
  // The state of parameter `p`, or null before its first step (for reading checkpoints).
  const CompressedSGDParamState* find_state(const at::Tensor& p) const;
  const CompressedSGDOptions& defaults_options() const;

 private:
  template <typename Self, typename Archive>
  static void serialize(Self& self, Archive& archive) {
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(CompressedSGD);
  }
  CompressedSGDParamState& state_for(const at::Tensor& p);
  // Checks and parses the param groups not seen yet (add_param_group): a size check per step.
  void adopt_new_param_groups();
  void start_overlap();
  // Stage 5 and the stats, shared by the serial and the overlapped step.
  at::Tensor finish_step(std::vector<detail::TensorStep>& tensors, StepStats& st, at::Tensor loss);

  std::unique_ptr<detail::StepSettings> settings_;
  bool exchange_decided_ = false;  // exchange "auto": chosen at the first step with a sparse tensor
  // Last: its hooks and comm thread reach every member above and CompressedOptimizer's, so it
  // is destroyed first (a derived class's members go before its base's).
  std::unique_ptr<detail::OverlappedStep> overlap_;
};

// Shell-style glob match ('*' any run, '?' one character), used for rules and skip lists.
bool glob_match(const std::string& pattern, const std::string& text);

}  // namespace cddp
