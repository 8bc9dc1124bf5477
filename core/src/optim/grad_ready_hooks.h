// grad_ready_hooks.h — knowing, during backward, when each bucket's gradients are final, and
// launching the buckets in their fixed order (bucket_plan.h).
//
// A post hook on each parameter's AccumulateGrad node fires after that backward has written the
// parameter's .grad for the last time (the engine runs post hooks after the node's apply; the
// hook PyTorch DDP's Reducer uses). When every parameter of a bucket has fired, the bucket is
// ready; buckets are launched strictly in order (bucket b only after b − 1), so that every rank
// issues its collectives in the same order whatever order its hooks fire in. launch_remaining()
// launches the buckets still waiting (parameters without a gradient this backward, gradients set
// by hand, or hooks disarmed) at step() time, in the same order.
//
// The hooks do nothing while disarmed (set_armed(false): micro-batches before the last one of a
// gradient accumulation). A parameter whose hook fires twice before launch_remaining() (two
// armed backwards without a step) is recorded: launch_remaining() then returns its index, since
// its bucket may have left with a gradient that was not final.
//
// The AccumulateGrad nodes are held here: a variable keeps only a weak reference to its own, and
// a node recreated later would have lost the hook. The destructor removes the hooks.
//
// It will not read gradients or communicate: `launch` does what a bucket needs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace torch::autograd {
struct Node;
}

namespace cddp::detail {

struct BucketPlan;

class GradReadyHooks {
 public:
  // `params`: the flat parameter list the plan indexes. Parameters that are not leaves needing a
  // gradient get no hook (their buckets wait for launch_remaining()).
  GradReadyHooks(const std::vector<at::Tensor>& params, const BucketPlan& plan, std::function<void(size_t)> launch);
  ~GradReadyHooks();
  GradReadyHooks(const GradReadyHooks&) = delete;
  GradReadyHooks& operator=(const GradReadyHooks&) = delete;

  void set_armed(bool armed);
  bool armed() const;
  // Launches every bucket not launched yet, in order, and starts a new round. Returns the flat
  // index of a parameter whose hook fired twice in this round, or -1.
  int64_t launch_remaining();

  void mark_ready(int64_t param_index);  // called by the hooks (on the backward thread)

 private:
  void launch_ready_locked();

  std::vector<std::vector<int64_t>> buckets_;
  std::vector<int64_t> bucket_of_;
  std::function<void(size_t)> launch_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;

  mutable std::mutex mu_;
  bool armed_ = true;
  std::vector<char> fired_;              // per parameter, this round
  std::vector<int64_t> pending_;         // per bucket: parameters not fired yet
  size_t next_bucket_ = 0;               // the first bucket not launched in this round
  int64_t fired_twice_ = -1;
};

}  // namespace cddp::detail
