// randomk_plugin_test.cpp — the randomk plugin, loaded from cddp_randomk.so: seeded and
// reproducible selection, distinct sorted indices, scaling, and no use of the global RNG.
#include <cddp/plugin_loader.h>

#include "philox.h"
#include "test_plugins.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

using cddp::testing::error_of;
using cddp::testing::to_vec;

namespace {

cddp::CompressContext ctx(int64_t step, int64_t param, uint64_t seed) {
  cddp::CompressContext c;
  c.step = step;
  c.param_index = param;
  c.seed = seed;
  c.param_name = "w";
  return c;
}

TEST(RandomK, PhiloxMatchesThePublishedKnownAnswer) {
  // Random123 known-answer test for philox4x32-10, counter = key = 0.
  cddp::philox::Block r = cddp::philox::philox4x32_10({{0, 0, 0, 0}}, {0, 0});
  EXPECT_EQ(r.c[0], 0x6627e8d5u);
  EXPECT_EQ(r.c[1], 0xe169c58du);
  EXPECT_EQ(r.c[2], 0xbc57ac4cu);
  EXPECT_EQ(r.c[3], 0x9b00dbd8u);
}

TEST(RandomK, DistinctSortedIndicesOfTheRightCount) {
  auto loader = cddp::testing::build_tree_loader();
  auto rk = loader.create("randomk", {{"ratio", 0.1}});
  at::Tensor x = at::randn({1003});
  cddp::Compressed c = rk->compress(x, ctx(1, 0, 9));
  auto idx = to_vec(c.indices);
  ASSERT_EQ(idx.size(), 101u);
  EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
  EXPECT_EQ(std::set<int64_t>(idx.begin(), idx.end()).size(), idx.size());
  EXPECT_TRUE(at::equal(c.values, x.index_select(0, c.indices.to(at::kLong))));
}

TEST(RandomK, SameSeedStepAndParameterGiveTheSameIndicesEverywhere) {
  auto loader = cddp::testing::build_tree_loader();
  auto a = loader.create("randomk", {{"ratio", 0.05}});
  auto b = loader.create("randomk", {{"ratio", 0.05}});
  at::Tensor x = at::randn({2000}), y = at::randn({2000});  // different data on the two "ranks"
  EXPECT_EQ(to_vec(a->compress(x, ctx(3, 1, 42)).indices), to_vec(b->compress(y, ctx(3, 1, 42)).indices));
  EXPECT_NE(to_vec(a->compress(x, ctx(4, 1, 42)).indices), to_vec(a->compress(x, ctx(3, 1, 42)).indices));
  EXPECT_NE(to_vec(a->compress(x, ctx(3, 2, 42)).indices), to_vec(a->compress(x, ctx(3, 1, 42)).indices));
  EXPECT_NE(to_vec(a->compress(x, ctx(3, 1, 43)).indices), to_vec(a->compress(x, ctx(3, 1, 42)).indices));
}

TEST(RandomK, IndicesAreTheKSmallestPhiloxPriorities) {
  auto loader = cddp::testing::build_tree_loader();
  auto rk = loader.create("randomk", {{"ratio", 0.01}});
  const int64_t n = 4099, k = cddp::k_for_ratio(0.01, n);
  std::vector<std::pair<uint32_t, int64_t>> pri;
  for (int64_t i = 0; i < n; ++i) {
    auto r = cddp::philox::philox4x32_10(cddp::philox::randomk_counter(i / 4, 5, 2), cddp::philox::randomk_key(77));
    pri.push_back({r.c[i % 4], i});
  }
  std::sort(pri.begin(), pri.end());
  std::vector<int64_t> expected;
  for (int64_t j = 0; j < k; ++j) expected.push_back(pri[j].second);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(to_vec(rk->compress(at::randn({n}), ctx(5, 2, 77)).indices), expected);
}

TEST(RandomK, UnbiasedScalingMultipliesByNumelOverK) {
  auto loader = cddp::testing::build_tree_loader();
  auto rk = loader.create("randomk", {{"ratio", 0.25}, {"scale", true}});
  at::Tensor x = at::ones({8});
  cddp::Compressed c = rk->compress(x, ctx(1, 0, 0));
  EXPECT_TRUE(at::equal(c.values, at::full({2}, 4.0f)));
}

// Unbiased with scale = true (Stich et al. 2018): over S seeds, entry i is kept with
// probability q = k/n and then worth x_i/q, so mean_S(D(C(x)))_i has mean x_i and standard
// deviation |x_i|·sqrt((1−q)/q)/sqrt(S). Every entry must lie within 5 of those deviations
// (a false alarm about once in 3.5 million entries); in norm the relative error is expected
// near sqrt((1−q)/(q·S)) (4.7 % here), and must stay under 1.3 times that.
TEST(RandomK, ScaledIsUnbiasedOverAThousandSeeds) {
  auto loader = cddp::testing::build_tree_loader();
  auto rk = loader.create("randomk", {{"ratio", 0.1}, {"scale", true}});
  const int64_t n = 500;
  const int S = 4000;
  const at::Tensor x = at::linspace(-2, 3, n);
  at::Tensor mean = at::zeros({n}, at::kDouble);
  for (int s = 0; s < S; ++s) mean.add_(rk->decompress(rk->compress(x, ctx(1, 0, uint64_t(s)))).to(at::kDouble));
  mean.div_(S);
  const double q = 0.1;
  const at::Tensor sigma = x.abs().to(at::kDouble) * std::sqrt((1 - q) / q) / std::sqrt(double(S));
  const at::Tensor err = (mean - x.to(at::kDouble)).abs();
  EXPECT_TRUE((err <= 5 * sigma + 1e-12).all().item<bool>()) << "worst z " << (err / (sigma + 1e-12)).max().item<double>();
  EXPECT_LT((mean - x.to(at::kDouble)).norm().item<double>() / x.norm().item<double>(),
            1.3 * std::sqrt((1 - q) / (q * S)));
  // Without scaling it is biased by the factor q: the same check then fails.
  auto plain = loader.create("randomk", {{"ratio", 0.1}});
  at::Tensor m2 = at::zeros({n}, at::kDouble);
  for (int s = 0; s < 200; ++s) m2.add_(plain->decompress(plain->compress(x, ctx(1, 0, uint64_t(s)))).to(at::kDouble));
  EXPECT_GT((m2.div_(200) - x.to(at::kDouble)).norm().item<double>() / x.norm().item<double>(), 0.5);
}

TEST(RandomK, NeverTouchesTheGlobalGenerator) {
  auto loader = cddp::testing::build_tree_loader();
  auto rk = loader.create("randomk", {{"ratio", 0.5}});
  at::manual_seed(123);
  at::Tensor x = at::randn({100});
  rk->compress(x, ctx(1, 0, 0));
  at::Tensor after = at::randn({4});
  at::manual_seed(123);
  at::randn({100});
  EXPECT_TRUE(at::equal(at::randn({4}), after));  // compress consumed nothing from the global RNG
}

TEST(RandomK, NaNInAKeptValueNamesTheParameter) {
  auto loader = cddp::testing::build_tree_loader();
  auto rk = loader.create("randomk", {{"ratio", 1.0}});
  std::string msg = error_of([&] { rk->compress(at::tensor({1.f, NAN}), ctx(2, 0, 0)); });
  EXPECT_NE(msg.find("randomk: NaN in the gradient of parameter 'w' at step 2"), std::string::npos) << msg;
}

}  // namespace
