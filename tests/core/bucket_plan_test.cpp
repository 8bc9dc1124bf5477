// bucket_plan_test.cpp — plan_buckets: reverse order, the first cap then the cap, oversized
// tensors alone, every parameter in exactly one bucket, bad caps refused.
// It will not test hooks or the exchange (overlapped_step_test).
#include "bucket_plan.h"

#include "test_plugins.h"

#include <gtest/gtest.h>

using cddp::detail::plan_buckets;
using cddp::testing::error_of;

TEST(BucketPlan, ReverseOrderFirstCapThenCap) {
  // Bytes of params 0..5; first cap 100, cap 1000. Bucket 0 starts at param 5 and closes once it
  // holds >= 100 bytes; later buckets close at >= 1000.
  const auto plan = plan_buckets({400, 700, 300, 800, 60, 50}, 100, 1000);
  const std::vector<std::vector<int64_t>> expected = {{5, 4}, {3, 2}, {1, 0}};
  EXPECT_EQ(plan.buckets, expected);
  EXPECT_EQ(plan.bucket_of, (std::vector<int64_t>{2, 2, 1, 1, 0, 0}));
}

TEST(BucketPlan, TensorLargerThanTheCapIsABucketOfItsOwn) {
  const auto plan = plan_buckets({10, 5000, 10}, 1, 100);
  const std::vector<std::vector<int64_t>> expected = {{2}, {1}, {0}};
  EXPECT_EQ(plan.buckets, expected);
}

TEST(BucketPlan, EverythingInOneBucketUnderBigCapsAndEmptyModel) {
  const auto one = plan_buckets({10, 20, 30}, 1 << 20, 1 << 20);
  ASSERT_EQ(one.buckets.size(), 1u);
  EXPECT_EQ(one.buckets[0], (std::vector<int64_t>{2, 1, 0}));
  EXPECT_TRUE(plan_buckets({}, 1, 1).buckets.empty());
}

TEST(BucketPlan, NonPositiveCapsAreRefused) {
  EXPECT_NE(error_of([] { plan_buckets({1}, 0, 10); }).find("bucket caps must be positive"), std::string::npos);
  EXPECT_NE(error_of([] { plan_buckets({1}, 10, -1); }).find("bucket caps must be positive"), std::string::npos);
}
