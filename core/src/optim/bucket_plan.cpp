// bucket_plan.cpp — reverse-order, size-capped buckets (bucket_plan.h).
#include "bucket_plan.h"

#include <c10/util/Exception.h>

namespace cddp::detail {

BucketPlan plan_buckets(const std::vector<int64_t>& grad_bytes, int64_t first_cap_bytes, int64_t cap_bytes) {
  TORCH_CHECK(first_cap_bytes > 0 && cap_bytes > 0, "bucket caps must be positive, got ", first_cap_bytes, " and ",
              cap_bytes, " bytes");
  BucketPlan plan;
  plan.bucket_of.assign(grad_bytes.size(), -1);
  int64_t filled = 0;
  for (int64_t i = int64_t(grad_bytes.size()) - 1; i >= 0; --i) {
    const int64_t cap = plan.buckets.size() <= 1 ? first_cap_bytes : cap_bytes;
    if (plan.buckets.empty() || filled >= cap) {
      plan.buckets.emplace_back();
      filled = 0;
    }
    plan.buckets.back().push_back(i);
    plan.bucket_of[size_t(i)] = int64_t(plan.buckets.size()) - 1;
    filled += grad_bytes[size_t(i)];
  }
  return plan;
}

}  // namespace cddp::detail
