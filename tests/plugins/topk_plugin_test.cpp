// topk_plugin_test.cpp — the topk plugin, loaded from cddp_topk.so: exactness against
// torch::topk, the tie rule, edge values, dtypes, layouts, and its error messages.
#include <cddp/plugin_loader.h>

#include "test_plugins.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

using cddp::testing::error_of;
using cddp::testing::to_vec;

namespace {

class TopK : public ::testing::Test {
 protected:
  cddp::PluginLoader loader = cddp::testing::build_tree_loader();
  cddp::Compressed run(const at::Tensor& x, double ratio) {
    auto c = loader.create("topk", {{"ratio", ratio}});
    cddp::CompressContext ctx;
    ctx.param_name = "w";
    return c->compress(x, ctx);
  }
};

TEST_F(TopK, KIsCeilOfRatioTimesNumelClamped) {
  EXPECT_EQ(cddp::k_for_ratio(0.01, 25'000'000), 250'000);
  EXPECT_EQ(cddp::k_for_ratio(0.01, 150), 2);
  EXPECT_EQ(cddp::k_for_ratio(1e-9, 10), 1);
  EXPECT_EQ(cddp::k_for_ratio(1.0, 10), 10);
  EXPECT_EQ(cddp::k_for_ratio(0.5, 0), 0);
}

TEST_F(TopK, SameMagnitudesAsTorchTopkAndSortedIndices) {
  at::Tensor x = at::randn({1000}, at::make_generator<at::CPUGeneratorImpl>(7));
  cddp::Compressed c = run(x, 0.05);
  ASSERT_EQ(c.count(), 50);
  EXPECT_EQ(c.indices.scalar_type(), at::kInt);
  at::Tensor expected = std::get<0>(at::sort(std::get<0>(at::topk(x.abs(), 50))));
  EXPECT_TRUE(at::equal(std::get<0>(at::sort(c.values.abs())), expected));
  EXPECT_TRUE(at::equal(c.values, x.index_select(0, c.indices.to(at::kLong))));
  auto idx = to_vec(c.indices);
  EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
}

TEST_F(TopK, KEqualsOneAndRatioOne) {
  at::Tensor x = at::tensor({0.5f, -3.f, 2.f});
  EXPECT_EQ(to_vec(run(x, 1e-6).indices), (std::vector<int64_t>{1}));
  cddp::Compressed all = run(x, 1.0);
  EXPECT_EQ(to_vec(all.indices), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(at::equal(all.values, x));
}

TEST_F(TopK, TiesBreakByLowerIndex) {
  at::Tensor x = at::tensor({1.f, -2.f, 2.f, 0.5f, -2.f, 2.f});
  EXPECT_EQ(to_vec(run(x, 2.0 / 6).indices), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(to_vec(run(x, 3.0 / 6).indices), (std::vector<int64_t>{1, 2, 4}));
}

TEST_F(TopK, AllZeroAndSignedZerosTie) {
  EXPECT_EQ(to_vec(run(at::zeros({5}), 0.4).indices), (std::vector<int64_t>{0, 1}));
  at::Tensor z = at::tensor({0.f, -0.f, 0.f, -0.f});
  cddp::Compressed c = run(z, 0.5);
  EXPECT_EQ(to_vec(c.indices), (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(std::signbit(c.values[1].item<float>())) << "the value keeps its sign";
}

TEST_F(TopK, InfinitiesAndDenormals) {
  const float inf = std::numeric_limits<float>::infinity();
  const float tiny = std::numeric_limits<float>::denorm_min();
  at::Tensor x = at::tensor({tiny, -inf, 1.f, inf, 2 * tiny, 0.f});
  EXPECT_EQ(to_vec(run(x, 2.0 / 6).indices), (std::vector<int64_t>{1, 3}));
  at::Tensor d = at::tensor({tiny, 0.f, 3 * tiny, 2 * tiny});
  EXPECT_EQ(to_vec(run(d, 0.5).indices), (std::vector<int64_t>{2, 3}));
}

TEST_F(TopK, NonContiguousInputUsesLogicalOrder) {
  at::Tensor base = at::arange(12, at::kFloat).view({3, 4});
  at::Tensor t = base.t();  // logical order: 0,4,8,1,5,9,...
  ASSERT_FALSE(t.is_contiguous());
  cddp::Compressed c = run(t, 2.0 / 12);
  EXPECT_EQ(to_vec(c.indices), (std::vector<int64_t>{8, 11}));  // values 10 and 11
  EXPECT_TRUE(at::equal(c.values, at::tensor({10.f, 11.f})));
  EXPECT_EQ(c.shape, (std::vector<int64_t>{4, 3}));
}

TEST_F(TopK, Float64Float16AndBFloat16) {
  at::Tensor x = at::tensor({1.0, -5.0, 3.0, 0.25}, at::kDouble);
  for (auto dtype : {at::kDouble, at::kHalf, at::kBFloat16}) {
    cddp::Compressed c = run(x.to(dtype), 0.5);
    EXPECT_EQ(c.values.scalar_type(), dtype);
    EXPECT_EQ(to_vec(c.indices), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(c.wire_bytes(), 2 * (int64_t(c10::elementSize(dtype)) + 4));
  }
}

TEST_F(TopK, EmptyTensorGivesEmptySelection) {
  cddp::Compressed c = run(at::empty({0, 3}), 0.5);
  EXPECT_EQ(c.count(), 0);
  EXPECT_EQ(c.numel, 0);
}

TEST_F(TopK, NaNIsAClearErrorNamingTheParameter) {
  std::string msg = error_of([&] { run(at::tensor({1.f, NAN, 2.f}), 0.5); });
  EXPECT_NE(msg.find("topk: NaN in the gradient of parameter 'w'"), std::string::npos) << msg;
}

TEST_F(TopK, RefusesIntegerTensorsAndOtherDevices) {
  std::string ints = error_of([&] { run(at::ones({4}, at::kInt), 0.5); });
  EXPECT_NE(ints.find("expected a floating-point tensor"), std::string::npos) << ints;
  std::string meta = error_of([&] { run(at::empty({4}, at::TensorOptions().device(at::kMeta)), 0.5); });
  EXPECT_NE(meta.find("is on device meta, which this build of the topk plugin does not support"), std::string::npos)
      << meta;
}

TEST_F(TopK, FusedFeedbackEqualsTheGenericChainBitwise) {
  auto c = loader.create("topk", {{"ratio", 0.03}});
  at::Tensor g = at::randn({517}, at::make_generator<at::CPUGeneratorImpl>(11));
  at::Tensor r1 = at::randn({517}, at::make_generator<at::CPUGeneratorImpl>(12)), r2 = r1.clone();
  cddp::Compressed fused = c->compress_with_feedback(g, r1, {});
  at::Tensor acc = g + r2;
  cddp::Compressed plain = c->compress(acc, {});
  r2 = acc - c->decompress(plain);
  EXPECT_TRUE(at::equal(fused.values, plain.values));
  EXPECT_TRUE(at::equal(fused.indices, plain.indices));
  EXPECT_TRUE(at::equal(r1, r2));
}

}  // namespace
