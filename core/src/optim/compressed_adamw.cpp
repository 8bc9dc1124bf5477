// compressed_adamw.cpp — CompressedAdamW: options and their checks, construction,
// serialization, and step(), a driver over the stages of this directory (compressed_adamw.h).
#include <cddp/compressed_adamw.h>
#include <cddp/gradient_exchange.h>
#include <cddp/payload_exchange.h>

#include "adamw_update.h"
#include "compression_stage.h"
#include "error_feedback.h"
#include "exchange_stage.h"
#include "nonfinite_guard.h"
#include "param_state_of.h"
#include "payload_stage.h"
#include "step_plan.h"
#include "typed_options.h"
#include "../ms_since.h"

#include <ATen/ATen.h>
#include <torch/serialize/archive.h>

#include <chrono>

namespace cddp {

namespace detail {
enum class AdamWMode { OneBit, Naive };

// The optimizer-wide option strings, parsed once at construction.
struct AdamWSettings {
  AdamWMode mode = AdamWMode::OneBit;
  int64_t warmup_steps = 0;
  NonfinitePolicy nonfinite = NonfinitePolicy::Error;
  IndexCoding index_coding = IndexCoding::Block16;
};
}  // namespace detail

namespace {

// Throws (TORCH_CHECK) naming the invalid option; `where` prefixes it ("param group 1: ").
void check_options(const CompressedAdamWOptions& o, const std::string& where) {
  const auto [beta1, beta2] = o.betas();
  TORCH_CHECK(o.lr() >= 0, where, "Invalid learning rate: ", o.lr());
  TORCH_CHECK(o.eps() >= 0, where, "Invalid epsilon value: ", o.eps());
  TORCH_CHECK(0 <= beta1 && beta1 < 1, where, "Invalid beta parameter at index 0: ", beta1, "; expected 0 <= beta1 < 1");
  TORCH_CHECK(0 <= beta2 && beta2 < 1, where, "Invalid beta parameter at index 1: ", beta2, "; expected 0 <= beta2 < 1");
  TORCH_CHECK(o.weight_decay() >= 0, where, "Invalid weight_decay value: ", o.weight_decay());
  TORCH_CHECK(o.density() < 0 || (o.density() > 0 && o.density() <= 1), where,
              "Invalid compression ratio (density): ", o.density(), "; expected 0 < ratio <= 1");
  for (const auto& r : o.rules())
    TORCH_CHECK(r.density < 0 || (r.density > 0 && r.density <= 1), where, "Invalid compression ratio ", r.density,
                " in rule '", r.match, "'; expected 0 < ratio <= 1");
  TORCH_CHECK(o.min_numel() >= 0, where, "Invalid min_numel: ", o.min_numel());
  TORCH_CHECK(o.mode() == "onebit" || o.mode() == "naive", where, "Invalid mode '", o.mode(),
              "'; expected \"onebit\" or \"naive\"");
  TORCH_CHECK(o.mode() != "onebit" || o.warmup_steps() >= 1, where, "Invalid warmup_steps: ", o.warmup_steps(),
              "; mode \"onebit\" needs at least 1 dense step to have a variance to freeze");
  TORCH_CHECK(!(o.mode() == "onebit" && o.amsgrad()), where,
              "amsgrad needs mode \"naive\": in mode \"onebit\" the variance is frozen, so it has no running max");
  TORCH_CHECK(o.nonfinite() == "error" || o.nonfinite() == "skip_step", where, "Invalid nonfinite policy '",
              o.nonfinite(), "'; expected \"error\" or \"skip_step\"");
  TORCH_CHECK(o.index_coding() == "block16" || o.index_coding() == "plain", where, "Invalid index_coding '",
              o.index_coding(), "'; expected \"block16\" or \"plain\"");
}

detail::AdamWSettings parse_settings(const CompressedAdamWOptions& d) {
  detail::AdamWSettings s;
  s.mode = d.mode() == "naive" ? detail::AdamWMode::Naive : detail::AdamWMode::OneBit;
  s.warmup_steps = d.warmup_steps();
  s.nonfinite = d.nonfinite() == "skip_step" ? detail::NonfinitePolicy::SkipStep : detail::NonfinitePolicy::Error;
  s.index_coding = d.index_coding() == "plain" ? IndexCoding::Plain : IndexCoding::Block16;
  return s;
}

// A group's value for an optimizer-wide option must be defaults()'s: it would be ignored.
template <class T>
void require_same(const T& group, const T& defaults, size_t index, const char* option) {
  TORCH_CHECK(group == defaults, "param group ", index, " sets ", option,
              " differently from the optimizer's defaults(); ", option,
              " is optimizer-wide: set it in the options the optimizer is constructed with");
}


}  // namespace

// ---------------------------------------------------------------- Options / ParamState

CompressedAdamWOptions::CompressedAdamWOptions(double lr) : lr_(lr) {}

void CompressedAdamWOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(amsgrad);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(mode);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(warmup_steps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(density);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(error_feedback);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(seed);
}

void CompressedAdamWOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, amsgrad);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(std::string, mode);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, warmup_steps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, density);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, error_feedback);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, seed);
}

void CompressedAdamWParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg_sq);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(max_exp_avg_sq);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(variance_frozen_at);
  write_memory(archive);
}

void CompressedAdamWParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, step);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, exp_avg);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, exp_avg_sq);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, max_exp_avg_sq);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, variance_frozen_at);
  read_memory(archive, "CompressedAdamW state");
}

// ---------------------------------------------------------------- construction

CompressedAdamW::CompressedAdamW(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                                 CompressedAdamWOptions defaults)
    : CompressedOptimizer(std::move(param_groups), std::make_unique<CompressedAdamWOptions>(defaults)) {
  check_options(defaults, "");
  settings_ = std::make_unique<detail::AdamWSettings>(parse_settings(defaults));
  adopt_new_param_groups();
  ExchangeWire wire;
  wire.coding = settings_->index_coding;
  connect_exchanges(defaults.communicator(), wire);
}

CompressedAdamW::CompressedAdamW(std::vector<std::pair<std::string, at::Tensor>> named_params,
                                 CompressedAdamWOptions options)
    : CompressedAdamW(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(
                          tensors_of(named_params))},
                      std::move(options)) {
  for (auto& [name, t] : named_params) names_.push_back(name);
}

CompressedAdamW::CompressedAdamW(std::vector<at::Tensor> params, CompressedAdamWOptions options)
    : CompressedAdamW(auto_named(params), std::move(options)) {}

CompressedAdamW::~CompressedAdamW() = default;

const CompressedAdamWOptions& CompressedAdamW::defaults_options() const {
  return static_cast<const CompressedAdamWOptions&>(defaults());
}

void CompressedAdamW::set_track_residual_norm(bool on) {
  static_cast<CompressedAdamWOptions&>(defaults()).track_residual_norm(on);
}

bool CompressedAdamW::variance_frozen() const {
  return settings_->mode == detail::AdamWMode::OneBit && step_ >= settings_->warmup_steps;
}

void CompressedAdamW::adopt_new_param_groups() {
  const auto& d = defaults_options();
  for (; groups_checked_ < param_groups_.size(); ++groups_checked_) {
    const size_t i = groups_checked_;
    const auto& g = static_cast<const CompressedAdamWOptions&>(param_groups_[i].options());
    check_options(g, "param group " + std::to_string(i) + ": ");
    require_same(g.mode(), d.mode(), i, "mode");
    require_same(g.warmup_steps(), d.warmup_steps(), i, "warmup_steps");
    require_same(g.nonfinite(), d.nonfinite(), i, "nonfinite");
    require_same(g.index_coding(), d.index_coding(), i, "index_coding");
    require_same(g.communicator(), d.communicator(), i, "communicator");
  }
}

CompressedAdamWParamState& CompressedAdamW::state_for(const at::Tensor& p) {
  return detail::param_state_of<CompressedAdamWParamState>(state_, p);
}

const CompressedAdamWParamState* CompressedAdamW::find_state(const at::Tensor& p) const {
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  auto it = state_.find(detail::state_key<Key>(p));
  return it == state_.end() ? nullptr : static_cast<const CompressedAdamWParamState*>(it->second.get());
}

// ---------------------------------------------------------------- step

namespace {

// Every parameter with a gradient, in param_groups() order: g = grad (AdamW's weight decay is
// decoupled, applied to p in the update), compression resolved by plan_tensor.
std::vector<detail::TensorStep> collect_adamw_gradients(std::vector<torch::optim::OptimizerParamGroup>& groups,
                                                        const std::vector<std::string>& names, double density_override) {
  std::vector<detail::TensorStep> tensors;
  int64_t flat_index = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const detail::CompressionKnobs knobs = detail::knobs_of(static_cast<const CompressedAdamWOptions&>(groups[gi].options()));
    for (auto& p : groups[gi].params()) {
      const int64_t index = flat_index++;
      if (p.grad().defined()) tensors.push_back(detail::plan_tensor(p, index, gi, names, knobs, density_override));
    }
  }
  return tensors;
}

}  // namespace

at::Tensor CompressedAdamW::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  adopt_new_param_groups();
  StepStats st;
  st.step = step_ + 1;

  // 1. Plan: g = grad, compressor, density and error feedback per tensor.
  std::vector<detail::TensorStep> tensors = collect_adamw_gradients(param_groups_, names_, density_override_);

  // 2. Non-finite gradients: all ranks error, or all ranks skip. Nothing has changed yet.
  if (detail::nonfinite_skips_step(tensors, *exchange_, settings_->nonfinite, step_ + 1, comm_->rank())) {
    record_skipped_step(st);
    return loss;
  }
  const bool onebit = settings_->mode == detail::AdamWMode::OneBit;
  const bool send_momentum = variance_frozen();  // onebit, past the warm-up
  ++step_;

  // 3. What each tensor sends: in the onebit warm-up its gradient, dense; afterwards its local
  //    momentum (its variance frozen) unless routed dense; in naive mode its gradient. Then
  //    compression with error feedback, locally: nothing has left this rank yet.
  const auto t_compress = detail::Clock::now();
  std::vector<detail::AdamWTensor> adam;
  adam.reserve(tensors.size());
  for (auto& t : tensors) {
    detail::AdamWTensor a{&t, &static_cast<const CompressedAdamWOptions&>(param_groups_[t.group].options()),
                          &state_for(t.p)};
    t.memory = a.state;
    detail::init_moments(a);
    if (onebit && !send_momentum) t.forced_dense = true, t.forced_dense_reason = "onebit warm-up (dense AdamW)";
    if (send_momentum && a.state->step() == 0)
      t.forced_dense = true, t.forced_dense_reason = "onebit: no dense AdamW step yet whose variance could freeze";
    adam.push_back(a);
  }
  detail::RoutedTensors routed =
      detail::route_tensors(tensors, comm_->world_size(), settings_->index_coding, {routes_, routing_log_}, st);
  if (send_momentum)
    for (auto& a : adam)
      if (a.t->route != Route::Dense) detail::momentum_to_send(a);
  detail::ModelSelection none =
      detail::compress_routed(routed, detail::SelectionScope::Layer, step_, comm_->world_size(), st);
  detail::encode_payloads(routed, *payload_buffers_, step_, comm_->world_size(), st);
  st.compress_ms = detail::ms_since(t_compress);

  // 4. Exchange: the mean over ranks of what every rank sent.
  detail::exchange_averages(routed, none, *exchange_, comm_->world_size(), st);
  detail::exchange_payloads(routed, *payloads_, *payload_buffers_, *comm_, step_, st);

  // 5. Apply, as torch::optim::AdamW does (the frozen variance past the onebit warm-up).
  detail::apply_adamw_updates(adam);

  if (defaults_options().track_residual_norm()) st.residual_norm = detail::residual_norm(tensors);
  record_step(st);
  return loss;
}

// ---------------------------------------------------------------- serialization

void CompressedAdamW::save(torch::serialize::OutputArchive& archive) const {
  serialize(*this, archive);
  archive.write("cddp_adamw_format_version", c10::IValue(kFormatVersion));
  archive.write("cddp_step", c10::IValue(step_));
  archive.write("cddp_adamw_mode", c10::IValue(defaults_options().mode()));
}

void CompressedAdamW::load(torch::serialize::InputArchive& archive) {
  c10::IValue version;
  if (!archive.try_read("cddp_adamw_format_version", version)) {
    c10::IValue sgd;
    TORCH_CHECK(!archive.try_read("cddp_format_version", sgd),
                "this is a CompressedSGD state (format version ", sgd.toInt(),
                "), not a CompressedAdamW one: the checkpoint was written with optimizer \"sgd\"");
    TORCH_CHECK(false, "not a CompressedAdamW state (no cddp_adamw_format_version): refusing to load it");
  }
  TORCH_CHECK(version.toInt() == kFormatVersion, "CompressedAdamW state has format version ", version.toInt(),
              ", this build reads version ", kFormatVersion);
  // A checkpoint of the other mode is refused: its residual holds another quantity (the
  // gradient's against the momentum's).
  c10::IValue mode;
  TORCH_CHECK(archive.try_read("cddp_adamw_mode", mode), "CompressedAdamW state has no mode");
  TORCH_CHECK(mode.toStringRef() == defaults_options().mode(), "CompressedAdamW state of mode \"",
              mode.toStringRef(), "\" cannot be loaded into an optimizer of mode \"", defaults_options().mode(),
              "\"");
  // Options hold objects that are not data (compressor, communicator, rules) and strings parsed
  // once (mode, nonfinite, index_coding): keep ours (LibTorch 2.x restores a group's options on
  // load; 1.13 leaves them).
  std::vector<CompressedAdamWOptions> live;
  for (auto& group : param_groups_) live.push_back(static_cast<CompressedAdamWOptions&>(group.options()));
  serialize(*this, archive);
  for (size_t i = 0; i < param_groups_.size() && i < live.size(); ++i) {
    auto& o = static_cast<CompressedAdamWOptions&>(param_groups_[i].options());
    o.mode(live[i].mode());
    o.compressor(live[i].compressor()).communicator(live[i].communicator()).rules(live[i].rules());
    o.nonfinite(live[i].nonfinite()).min_numel(live[i].min_numel()).compress_1d(live[i].compress_1d());
    o.auto_dense(live[i].auto_dense()).track_residual_norm(live[i].track_residual_norm());
    o.index_coding(live[i].index_coding()).warmup_steps(live[i].warmup_steps());
  }
  c10::IValue step;
  TORCH_CHECK(archive.try_read("cddp_step", step), "CompressedAdamW state has no step count");
  step_ = step.toInt();
}

}  // namespace cddp
