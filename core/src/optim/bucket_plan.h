// bucket_plan.h — which parameters are exchanged together when the exchange overlaps backward
// (overlapped_step.h): buckets of consecutive parameters in reverse order, the order in which
// backward finishes their gradients, each closed once it holds `cap_bytes` of gradient, the
// first one at `first_cap_bytes` so that communication starts early — the rule of PyTorch DDP's
// Reducer (bucket_cap_mb = 25, a first bucket of 1 MB: torch/csrc/distributed/c10d/reducer.cpp,
// compute_bucket_assignment_by_size). A tensor larger than the cap is a bucket of its own.
//
// It will not look at gradients, devices or dtypes beyond the byte sizes it is given, and it
// does not register hooks (grad_ready_hooks.h).
#pragma once

#include <cstdint>
#include <vector>

namespace cddp::detail {

struct BucketPlan {
  std::vector<std::vector<int64_t>> buckets;  // flat parameter indices, bucket 0 first to be ready
  std::vector<int64_t> bucket_of;             // per flat parameter index: its bucket
};

// `grad_bytes[i]`: the gradient size in bytes of flat parameter i. Caps must be positive.
BucketPlan plan_buckets(const std::vector<int64_t>& grad_bytes, int64_t first_cap_bytes, int64_t cap_bytes);

}  // namespace cddp::detail
