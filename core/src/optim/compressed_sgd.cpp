// compressed_sgd.cpp — CompressedSGD: options, construction, serialization, and step(), a
// driver over the stages in this directory (one file each; see compressed_sgd.h).
#include <cddp/compressed_sgd.h>
#include <cddp/gradient_exchange.h>

#include "compression_stage.h"
#include "error_feedback.h"
#include "exchange_stage.h"
#include "nonfinite_guard.h"
#include "overlapped_step.h"
#include "param_state_of.h"
#include "payload_stage.h"
#include "sgd_update.h"
#include "step_plan.h"
#include "typed_options.h"
#include "../ms_since.h"

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/serialize/archive.h>

#include <chrono>
#include <type_traits>

namespace cddp {

namespace {
// On an accelerator the compressors only enqueue work: compress_ms is timed to its completion
// (the current stream synchronised before and after), or it would be the launch overhead alone.
// The non-finite check's .item() has just waited on the device, so the first wait is free; the
// second costs one round trip per step. A no-op on CPU.
void wait_for_device(const std::vector<detail::TensorStep>& tensors) {
  for (const auto& t : tensors)
    if (!t.p.is_cpu()) {
      c10::impl::VirtualGuardImpl(t.p.device().type()).getStream(t.p.device()).synchronize();
      return;
    }
}
}  // namespace

// ---------------------------------------------------------------- Options / ParamState

CompressedSGDOptions::CompressedSGDOptions(double lr) : lr_(lr) {}

void CompressedSGDOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(dampening);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(nesterov);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(density);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(error_feedback);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual_lr_scaling);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_mode);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(scope);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(seed);
}

void CompressedSGDOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, momentum);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, dampening);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, nesterov);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, density);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, error_feedback);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, residual_lr_scaling);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(std::string, momentum_mode);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(std::string, scope);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, seed);
}

// The residual, residual_lr and plugin state: CompressionMemory's serialization (a version-2
// state has no plugin state, and loads it empty).
void CompressedSGDParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
  write_memory(archive);
}

void CompressedSGDParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, momentum_buffer);
  read_memory(archive, "CompressedSGD state");
}

// ---------------------------------------------------------------- construction

CompressedSGD::CompressedSGD(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                             CompressedSGDOptions defaults)
    : CompressedOptimizer(std::move(param_groups), std::make_unique<CompressedSGDOptions>(defaults)) {
  detail::check_options(defaults);
  settings_ = std::make_unique<detail::StepSettings>(detail::parse_settings(defaults_options()));
  adopt_new_param_groups();
  ExchangeWire wire;
  wire.coding = settings_->index_coding;
  wire.values = settings_->value_wire;
  wire.algorithm = settings_->exchange == detail::ExchangeChoice::SparseAllreduce ? SparseAlgorithm::SparseAllreduce
                                                                                 : SparseAlgorithm::Allgather;
  connect_exchanges(defaults.communicator(), wire);
  exchange_decided_ = settings_->exchange != detail::ExchangeChoice::Auto;
  if (defaults.overlap()) start_overlap();
}

CompressedSGD::CompressedSGD(std::vector<std::pair<std::string, at::Tensor>> named_params,
                             CompressedSGDOptions options)
    : CompressedSGD(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(
                        tensors_of(named_params))},
                    std::move(options)) {
  for (auto& [name, t] : named_params) names_.push_back(name);
}

CompressedSGD::CompressedSGD(std::vector<at::Tensor> params, CompressedSGDOptions options)
    : CompressedSGD(auto_named(params), std::move(options)) {}

CompressedSGD::~CompressedSGD() = default;

const CompressedSGDOptions& CompressedSGD::defaults_options() const {
  return static_cast<const CompressedSGDOptions&>(defaults());
}

void CompressedSGD::set_track_residual_norm(bool on) {
  static_cast<CompressedSGDOptions&>(defaults()).track_residual_norm(on);
}

void CompressedSGD::adopt_new_param_groups() {
  for (size_t i = settings_->momentum_mode.size(); i < param_groups_.size(); ++i)
    detail::adopt_group(*settings_, static_cast<const CompressedSGDOptions&>(param_groups_[i].options()),
                        defaults_options(), i);
}

void CompressedSGD::start_overlap() {
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  detail::OverlapEnvironment env{param_groups_, *settings_, names_, *exchange_, *payloads_, *payload_buffers_, *comm_,
                                 {routes_, routing_log_}, density_override_, step_, exchange_decided_,
                                 exchange_decision_,
                                 [this](const at::Tensor& p) -> CompressedSGDParamState& { return state_for(p); },
                                 [this](const at::Tensor& p) {
                                   return const_cast<CompressedSGDParamState*>(find_state(p));
                                 },
                                 [this](const at::Tensor& p) { state_.erase(detail::state_key<Key>(p)); }};
  const auto mib = [](double mb) { return int64_t(mb * 1024 * 1024); };
  overlap_ = std::make_unique<detail::OverlappedStep>(std::move(env), mib(defaults_options().first_bucket_cap_mb()),
                                                      mib(defaults_options().bucket_cap_mb()));
}

void CompressedSGD::set_last_micro_batch(bool last) {
  if (overlap_) overlap_->set_armed(last);
}

size_t CompressedSGD::overlap_bucket_count() const { return overlap_ ? overlap_->bucket_count() : 0; }

CompressedSGDParamState& CompressedSGD::state_for(const at::Tensor& p) {
  return detail::param_state_of<CompressedSGDParamState>(state_, p);
}

const CompressedSGDParamState* CompressedSGD::find_state(const at::Tensor& p) const {
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  auto it = state_.find(detail::state_key<Key>(p));
  return it == state_.end() ? nullptr : static_cast<const CompressedSGDParamState*>(it->second.get());
}

// ---------------------------------------------------------------- step

at::Tensor CompressedSGD::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  adopt_new_param_groups();
  const detail::StepSettings& settings = *settings_;
  StepStats st;
  st.step = step_ + 1;

  std::vector<detail::TensorStep> tensors;
  if (overlap_) {
    // Stages 1–4 ran per bucket during backward (overlapped_step.h); what is left runs here.
    if (!overlap_->finish(tensors, st)) {
      record_skipped_step(st);
      return loss;
    }
    ++step_;
    return finish_step(tensors, st, loss);
  }

  // 1. Plan: g = grad + weight_decay·p, compressor, density and error feedback per tensor.
  tensors = detail::collect_gradients(param_groups_, settings, names_, density_override_);

  // 2. Non-finite gradients: all ranks error, or all ranks skip. Nothing has changed yet.
  if (detail::nonfinite_skips_step(tensors, *exchange_, settings.nonfinite, step_ + 1, comm_->rank())) {
    record_skipped_step(st);  // every state untouched, the step count too
    return loss;
  }
  ++step_;

  // 3. Route each tensor (decided per step, logged when it changes), then compress locally:
  //    error feedback and DGC momentum included. Nothing has left this rank yet.
  wait_for_device(tensors);  // on an accelerator, time the compression to its completion
  const auto t_compress = detail::Clock::now();
  for (auto& t : tensors) t.memory = t.state = &state_for(t.p);
  detail::RoutedTensors routed =
      detail::route_tensors(tensors, comm_->world_size(), settings.index_coding, {routes_, routing_log_}, st);
  detail::rescale_residuals_to_lr(tensors);
  detail::ModelSelection model = detail::compress_routed(routed, settings.scope, step_, comm_->world_size(), st);
  detail::encode_payloads(routed, *payload_buffers_, step_, comm_->world_size(), st);
  wait_for_device(tensors);
  st.compress_ms = detail::ms_since(t_compress);

  // 4. Exchange: the mean over ranks of what every rank sent (what did not arrive, back into
  //    the residuals).
  detail::decide_exchange_once(routed, *exchange_, comm_->world_size(), exchange_decided_, exchange_decision_);
  detail::exchange_averages(routed, model, *exchange_, comm_->world_size(), st);
  detail::exchange_payloads(routed, *payloads_, *payload_buffers_, *comm_, step_, st);

  return finish_step(tensors, st, loss);
}

at::Tensor CompressedSGD::finish_step(std::vector<detail::TensorStep>& tensors, StepStats& st, at::Tensor loss) {
  // 5. Apply, as torch::optim::SGD does; momentum too where it was not applied before compression.
  detail::apply_sgd_updates(tensors);

  if (defaults_options().track_residual_norm()) st.residual_norm = detail::residual_norm(tensors);
  record_step(st);
  return loss;
}

// ---------------------------------------------------------------- serialization

void CompressedSGD::save(torch::serialize::OutputArchive& archive) const {
  serialize(*this, archive);
  archive.write("cddp_format_version", c10::IValue(kFormatVersion));
  archive.write("cddp_step", c10::IValue(step_));
}

void CompressedSGD::load(torch::serialize::InputArchive& archive) {
  c10::IValue version;
  TORCH_CHECK(archive.try_read("cddp_format_version", version),
              "not a CompressedSGD state (no cddp_format_version): refusing to load it");
  TORCH_CHECK(version.toInt() == kFormatVersion || version.toInt() == 2, "CompressedSGD state has format version ",
              version.toInt(), ", this build reads versions 2 and ", kFormatVersion);
  // Options hold objects that are not data (compressor, communicator, rules): keep ours.
  std::vector<CompressedSGDOptions> live;
  for (auto& group : param_groups_) live.push_back(static_cast<CompressedSGDOptions&>(group.options()));
  serialize(*this, archive);
  for (size_t i = 0; i < param_groups_.size() && i < live.size(); ++i) {
    auto& o = static_cast<CompressedSGDOptions&>(param_groups_[i].options());
    o.compressor(live[i].compressor()).communicator(live[i].communicator()).rules(live[i].rules());
    o.nonfinite(live[i].nonfinite()).min_numel(live[i].min_numel()).compress_1d(live[i].compress_1d());
    o.auto_dense(live[i].auto_dense()).track_residual_norm(live[i].track_residual_norm());
    o.index_coding(live[i].index_coding()).value_dtype(live[i].value_dtype()).exchange(live[i].exchange());
    o.overlap(live[i].overlap()).bucket_cap_mb(live[i].bucket_cap_mb()).first_bucket_cap_mb(live[i].first_bucket_cap_mb());
    // Parsed once (typed_options.h): the live strings stay, the checkpoint's are only a record —
    // as before, when step() read them from defaults(), which loading never changes.
    o.momentum_mode(live[i].momentum_mode()).scope(live[i].scope());
  }
  c10::IValue step;
  TORCH_CHECK(archive.try_read("cddp_step", step), "CompressedSGD state has no step count");
  step_ = step.toInt();
}

}  // namespace cddp
