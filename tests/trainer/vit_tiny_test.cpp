// vit_tiny_test.cpp — ViTTiny and TransformerBlock: parameter names and count, the patch it
// picks, that a block without positions is permutation-equivariant over tokens (attention
// mixes tokens by content only), that ViTTiny's positions break that, that it learns a tiny
// task, and its errors. It does not measure accuracy on a real data set (docs/results.md does).
#include <cddp/models/model_factory.h>
#include <cddp/models/transformer_block.h>
#include <cddp/models/vit_tiny.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <set>
#include <stdexcept>
#include <string>

namespace {

int64_t param_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST(ViTTiny, NamesAndCountOfTheDefault) {
  at::manual_seed(0);
  cddp::ViTTiny vit(1, 28, 28, 10);
  EXPECT_EQ(vit.patch(), 7);
  EXPECT_EQ(vit.tokens(), 17);
  std::set<std::string> names;
  for (const auto& item : vit.named_parameters()) names.insert(item.key());
  for (const char* n : {"patch_embed.weight", "cls_token", "pos_embed", "blocks.0.attn_qkv.weight",
                        "blocks.2.mlp_fc2.bias", "blocks.1.norm1.weight", "norm.bias", "head.weight"})
    EXPECT_EQ(names.count(n), 1u) << n;
  const int64_t d = 128, block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 256 + 256) + (256 * d + d);
  EXPECT_EQ(param_count(vit), (49 * d + d) + d + 17 * d + 3 * block + 2 * d + (d * 10 + 10));
  EXPECT_LT(param_count(vit), 1000000);
  cddp::ViTTiny cifar(3, 32, 32, 10);
  EXPECT_EQ(cifar.patch(), 4);
  EXPECT_EQ(cifar.tokens(), 65);
}

TEST(TransformerBlock, PermutingTokensPermutesTheOutput) {
  at::manual_seed(1);
  cddp::TransformerBlock block(32, 4, 64);
  const at::Tensor x = at::randn({2, 9, 32});
  const at::Tensor perm = at::randperm(9);
  const at::Tensor y = block.forward(x);
  const at::Tensor y_perm = block.forward(x.index_select(1, perm));
  EXPECT_TRUE(at::allclose(y.index_select(1, perm), y_perm, 1e-5, 1e-5));
  // ...and tokens do interact: changing one token changes the others' outputs.
  at::Tensor x2 = x.clone();
  x2.select(1, 0).add_(at::randn({2, 32}));  // not a constant: LayerNorm would remove that
  EXPECT_GT((block.forward(x2).select(1, 5) - y.select(1, 5)).abs().max().item<float>(), 1e-4f);
}

TEST(ViTTiny, PositionsMakePatchOrderMatter) {
  at::manual_seed(2);
  cddp::ViTTiny vit(1, 28, 28, 10);
  const at::Tensor img = at::randn({1, 1, 28, 28});
  // Swap the top-left and bottom-right 7×7 patches: same patches, other places.
  at::Tensor swapped = img.clone();
  swapped.narrow(2, 0, 7).narrow(3, 0, 7).copy_(img.narrow(2, 21, 7).narrow(3, 21, 7));
  swapped.narrow(2, 21, 7).narrow(3, 21, 7).copy_(img.narrow(2, 0, 7).narrow(3, 0, 7));
  EXPECT_GT((vit.forward(img) - vit.forward(swapped)).abs().max().item<float>(), 1e-5f);
}

TEST(ViTTiny, LearnsToSeparateTwoPatterns) {
  at::manual_seed(3);
  cddp::ViTTinyOptions small;
  small.dim = 32;
  small.depth = 1;
  small.mlp_dim = 64;
  auto vit = std::make_shared<cddp::ViTTiny>(1, 28, 28, 2, small);
  torch::optim::AdamW opt(vit->parameters(), torch::optim::AdamWOptions(3e-3));
  // Class 1: a bright patch bottom-right; class 0: top-left. Noise elsewhere.
  auto batch = [](int64_t n) {
    at::Tensor x = at::randn({n, 1, 28, 28}) * 0.3, y = at::randint(0, 2, {n}, at::kLong);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = y[i].item<int64_t>() ? 21 : 0;
      x[i].narrow(1, o, 7).narrow(2, o, 7).add_(2.0);
    }
    return std::make_pair(x, y);
  };
  for (int step = 0; step < 100; ++step) {
    auto [x, y] = batch(32);
    opt.zero_grad();
    at::cross_entropy_loss(vit->forward(x), y).backward();
    opt.step();
  }
  at::NoGradGuard no_grad;
  auto [x, y] = batch(200);
  const double acc = vit->forward(x).argmax(1).eq(y).to(at::kDouble).mean().item<double>();
  EXPECT_GT(acc, 0.95);
}

TEST(ViTTiny, ErrorsNameTheField) {
  cddp::ViTTinyOptions o;
  o.patch = 5;
  try {
    cddp::ViTTiny vit(1, 28, 28, 10, o);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("patch 5 does not divide the 28x28 input"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cddp::ViTTiny(1, 30, 30, 10), std::invalid_argument);
  EXPECT_THROW(cddp::TransformerBlock(30, 4, 64), std::invalid_argument);
  cddp::ViTTiny vit(1, 28, 28, 10);
  try {
    vit.forward(at::randn({2, 3, 32, 32}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("does not match the [N, 1, 28, 28]"), std::string::npos) << e.what();
  }
}
