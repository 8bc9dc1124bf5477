// overlapped_step.cpp — bucket jobs during backward, the rest at step() (overlapped_step.h).
#include "overlapped_step.h"

#include "compression_stage.h"
#include "error_feedback.h"
#include "exchange_stage.h"
#include "nonfinite_guard.h"
#include "payload_stage.h"
#include "../ms_since.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>

namespace cddp::detail {
namespace {


std::vector<at::Tensor> flat_params(const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  std::vector<at::Tensor> out;
  for (const auto& g : groups)
    for (const auto& p : g.params()) out.push_back(p);
  return out;
}

// A bucket's counts into the step's (step and skipped are the step's own).
void add_counts(StepStats& into, const StepStats& s) {
  into.elements_in += s.elements_in;
  into.elements_sent += s.elements_sent;
  into.payload_bytes += s.payload_bytes;
  into.bytes_sent += s.bytes_sent;
  into.bytes_received += s.bytes_received;
  into.bytes_dense_equivalent += s.bytes_dense_equivalent;
  into.compressed_tensors += s.compressed_tensors;
  into.dense_tensors += s.dense_tensors;
  into.compress_ms += s.compress_ms;
  into.comm_ms += s.comm_ms;
}

void by_index(std::vector<TensorStep*>& v) {
  std::sort(v.begin(), v.end(), [](const TensorStep* a, const TensorStep* b) { return a->index < b->index; });
}

}  // namespace

OverlappedStep::OverlappedStep(OverlapEnvironment env, int64_t first_bucket_bytes, int64_t bucket_bytes)
    : env_(std::move(env)) {
  const std::vector<at::Tensor> params = flat_params(env_.groups);
  param_count_ = params.size();
  std::vector<int64_t> bytes;
  for (const at::Tensor& p : params) {
    TORCH_CHECK(p.is_cpu(), "overlap: parameter ", bytes.size(), " is on ", p.device(),
                "; the overlapped exchange runs on CPU parameters only (set overlap = false)");
    bytes.push_back(p.numel() * int64_t(p.element_size()));
  }
  const BucketPlan plan = plan_buckets(bytes, first_bucket_bytes, bucket_bytes);
  buckets_.resize(plan.buckets.size());
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    buckets_[b].members.assign(params.size(), 0);
    for (int64_t i : plan.buckets[b]) buckets_[b].members[size_t(i)] = 1;
  }
  hooks_ = std::make_unique<GradReadyHooks>(params, plan, [this](size_t b) {
    worker_.submit([this, b] { run_bucket(b); });
  });
}

OverlappedStep::~OverlappedStep() { hooks_.reset(); }

void OverlappedStep::run_bucket(size_t b) {
  Bucket& k = buckets_[b];
  if (skipped_) return;  // an earlier bucket had a non-finite gradient somewhere: agreed
  const int64_t step = env_.steps_taken + 1;
  const int world = env_.comm.world_size();
  k.tensors = collect_gradients(env_.groups, env_.settings, env_.names, env_.density_override, &k.members);
  if (nonfinite_skips_step(k.tensors, env_.exchange, env_.settings.nonfinite, step, env_.comm.rank())) {
    skipped_ = true;
    return;
  }
  const auto t0 = Clock::now();
  for (TensorStep& t : k.tensors) {
    if (env_.settings.nonfinite == NonfinitePolicy::SkipStep) k.backups.push_back(backup_of(t.p));
    t.memory = t.state = &env_.state_for(t.p);
  }
  k.routed = route_tensors(k.tensors, world, env_.settings.index_coding, env_.memory, k.stats);
  rescale_residuals_to_lr(k.tensors);
  compress_routed(k.routed, SelectionScope::Layer, step, world, k.stats);
  encode_payloads(k.routed, env_.payload_buffers, step, world, k.stats);
  k.stats.compress_ms += ms_since(t0);

  // Collectives whose result per tensor does not depend on the other tensors in them.
  RoutedTensors now;
  now.sparse = k.routed.sparse;
  now.gather = k.routed.gather;
  ModelSelection none;
  decide_exchange_once(now, env_.exchange, world, env_.exchange_decided, env_.exchange_decision);
  exchange_averages(now, none, env_.exchange, world, k.stats);
  exchange_payloads(now, env_.payloads, env_.payload_buffers, env_.comm, step, k.stats);
}

// The flattened allreduces and the coalesced rounds, over every bucket's tensors in parameter
// order: the serial path's buffers exactly.
void OverlappedStep::exchange_deferred(StepStats& stats) {
  RoutedTensors later;
  for (Bucket& k : buckets_) {
    later.shared.insert(later.shared.end(), k.routed.shared.begin(), k.routed.shared.end());
    later.dense.insert(later.dense.end(), k.routed.dense.begin(), k.routed.dense.end());
    later.sum.insert(later.sum.end(), k.routed.sum.begin(), k.routed.sum.end());
    later.rounds.insert(later.rounds.end(), k.routed.rounds.begin(), k.routed.rounds.end());
  }
  by_index(later.shared);
  by_index(later.dense);
  by_index(later.sum);
  by_index(later.rounds);
  ModelSelection none;
  exchange_averages(later, none, env_.exchange, env_.comm.world_size(), stats);
  exchange_payloads(later, env_.payloads, env_.payload_buffers, env_.comm, env_.steps_taken + 1, stats);
}

bool OverlappedStep::finish(std::vector<TensorStep>& tensors, StepStats& stats) {
  TORCH_CHECK(flat_params(env_.groups).size() == param_count_, "overlap: the optimizer has ",
              flat_params(env_.groups).size(), " parameters but its buckets were planned over ", param_count_,
              "; add_param_group is not supported with overlap = true");
  const int64_t twice = hooks_->launch_remaining();
  try {
    worker_.wait();
  } catch (...) {
    clear_round();
    throw;
  }
  if (twice >= 0) {
    clear_round();
    const std::string name = size_t(twice) < env_.names.size() ? env_.names[size_t(twice)] : "param" + std::to_string(twice);
    TORCH_CHECK(false, "overlap: parameter '", name, "' received its gradient twice before step() while the "
                "exchange was armed, so its bucket may have been sent before its gradient was final; with gradient "
                "accumulation call set_last_micro_batch(false) before every micro-batch's backward but the last");
  }
  if (skipped_) {
    for (auto b = buckets_.rbegin(); b != buckets_.rend(); ++b)
      for (auto s = b->backups.rbegin(); s != b->backups.rend(); ++s) restore(*s);
    clear_round();
    return false;
  }
  exchange_deferred(stats);
  for (Bucket& k : buckets_) {
    add_counts(stats, k.stats);
    for (TensorStep& t : k.tensors) tensors.push_back(std::move(t));
  }
  std::sort(tensors.begin(), tensors.end(), [](const TensorStep& a, const TensorStep& b) { return a.index < b.index; });
  clear_round();
  return true;
}

OverlappedStep::StateBackup OverlappedStep::backup_of(const at::Tensor& p) const {
  StateBackup b;
  b.param = p;
  b.state = env_.find_state(p);
  if (!b.state) return b;
  auto copy = [](const at::Tensor& t) { return t.defined() ? t.clone() : at::Tensor(); };
  b.residual = copy(b.state->residual());
  b.momentum_buffer = copy(b.state->momentum_buffer());
  b.residual_lr = b.state->residual_lr();
  for (const auto& [name, t] : b.state->plugin_state()) b.plugin_state[name] = copy(t);
  return b;
}

void OverlappedStep::restore(const StateBackup& b) const {
  if (!b.state) {
    env_.erase_state(b.param);
    return;
  }
  b.state->residual(b.residual);
  b.state->momentum_buffer(b.momentum_buffer);
  b.state->residual_lr(b.residual_lr);
  b.state->plugin_state(b.plugin_state);
}

void OverlappedStep::clear_round() {
  for (Bucket& k : buckets_) {
    k.tensors.clear();
    k.routed = RoutedTensors{};
    k.stats = StepStats{};
    k.backups.clear();
  }
  skipped_ = false;
}

}  // namespace cddp::detail
