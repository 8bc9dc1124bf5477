// grad_ready_hooks.cpp — AccumulateGrad post hooks and in-order bucket launches
// (grad_ready_hooks.h).
#include "grad_ready_hooks.h"

#include "bucket_plan.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

namespace cddp::detail {
namespace {

// Same signature in LibTorch 1.13 and 2.x (torch/csrc/autograd/function_hook.h).
class ReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradReadyHooks& owner, int64_t index) : owner_(owner), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    owner_.mark_ready(index_);
    return outputs;
  }

 private:
  GradReadyHooks& owner_;
  int64_t index_;
};

}  // namespace

GradReadyHooks::GradReadyHooks(const std::vector<at::Tensor>& params, const BucketPlan& plan,
                               std::function<void(size_t)> launch)
    : buckets_(plan.buckets), bucket_of_(plan.bucket_of), launch_(std::move(launch)) {
  fired_.assign(params.size(), 0);
  pending_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = int64_t(buckets_[b].size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].requires_grad() || !params[i].is_leaf()) continue;
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params[i]);
    if (!acc) continue;
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(*this, int64_t(i))));
    accumulators_.push_back(std::move(acc));
  }
}

GradReadyHooks::~GradReadyHooks() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
}

void GradReadyHooks::set_armed(bool armed) {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = armed;
}

bool GradReadyHooks::armed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return armed_;
}

void GradReadyHooks::mark_ready(int64_t param_index) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;
  if (fired_[size_t(param_index)]) {
    if (fired_twice_ < 0) fired_twice_ = param_index;
    return;
  }
  fired_[size_t(param_index)] = 1;
  --pending_[size_t(bucket_of_[size_t(param_index)])];
  launch_ready_locked();
}

void GradReadyHooks::launch_ready_locked() {
  while (next_bucket_ < buckets_.size() && pending_[next_bucket_] == 0) launch_(next_bucket_++);
}

int64_t GradReadyHooks::launch_remaining() {
  std::lock_guard<std::mutex> lock(mu_);
  while (next_bucket_ < buckets_.size()) launch_(next_bucket_++);
  const int64_t twice = fired_twice_;
  fired_twice_ = -1;
  next_bucket_ = 0;
  std::fill(fired_.begin(), fired_.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = int64_t(buckets_[b].size());
  return twice;
}

}  // namespace cddp::detail
