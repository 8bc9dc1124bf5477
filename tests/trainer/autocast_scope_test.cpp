// autocast_scope_test.cpp — AutocastScope: "bf16" makes matrix products bf16 inside the scope
// and fp32 again after it, leaves parameters and their gradients fp32, restores a previous
// state; "fp32" changes nothing. It does not measure speed or accuracy (docs/results.md).
#include "precision/autocast_scope.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

TEST(AutocastScope, Bf16CastsMatmulInsideAndRestoresAfter) {
  const at::Tensor a = at::randn({4, 8}), b = at::randn({8, 3});
  {
    cddp::train::AutocastScope scope("bf16");
    EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
    EXPECT_EQ(a.scalar_type(), at::kFloat);
  }
  EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kFloat);
}

TEST(AutocastScope, Fp32IsANoOp) {
  cddp::train::AutocastScope scope("fp32");
  EXPECT_EQ(at::matmul(at::randn({2, 2}), at::randn({2, 2})).scalar_type(), at::kFloat);
}

TEST(AutocastScope, GradientsOfFp32LeavesStayFp32) {
  at::Tensor w = at::randn({8, 3}).set_requires_grad(true);
  const at::Tensor x = at::randn({4, 8});
  at::Tensor loss;
  {
    cddp::train::AutocastScope scope("bf16");
    loss = at::matmul(x, w).to(at::kFloat).pow(2).sum();
  }
  loss.backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().scalar_type(), at::kFloat);
  // The bf16 product is not the fp32 one: autocast really ran in bf16.
  const at::Tensor exact = at::matmul(x, w.detach()).pow(2).sum();
  EXPECT_NE(loss.item<float>(), exact.item<float>());
  EXPECT_NEAR(loss.item<float>(), exact.item<float>(), 0.05 * std::abs(exact.item<float>()));
}

TEST(AutocastScope, NestedScopesRestoreTheOuterOne) {
  const at::Tensor a = at::randn({4, 8}), b = at::randn({8, 3});
  cddp::train::AutocastScope outer("bf16");
  {
    cddp::train::AutocastScope inner("bf16");
    EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16) << "the outer scope is still on";
}
