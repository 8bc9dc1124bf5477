// vit_tiny.h — a small vision transformer for 28×28 (or 32×32) images (Dosovitskiy et al. 2021,
// "An image is worth 16x16 words"): non-overlapping patches, flattened and projected linearly,
// a learned class token and learned positions, `depth` pre-norm TransformerBlocks, a final
// LayerNorm and a linear head on the class token.
//
// Defaults (ViTTinyOptions): patch 7 (28×28 → 16 patches; 32×32 takes patch 4 → 64), dim 128,
// depth 3, heads 4, MLP 256: 407,690 parameters for 1×28×28 and 10 classes — small enough for
// a 2-core CPU study, with the attention and MLP matrices (16k–49k entries) large enough to be
// worth compressing. Parameters: patch_embed.*, cls_token, pos_embed, blocks.<i>.*, norm.*, head.*.
//
// It will not resize images, use dropout or stochastic depth, or pick a patch that does not
// divide the image (an error says so).
#pragma once

#include <cddp/models/classifier.h>
#include <cddp/models/transformer_block.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>

namespace cddp {

struct ViTTinyOptions {
  int64_t patch = 0;  // 0: 7 when it divides height and width, else 4
  int64_t dim = 128;
  int64_t depth = 3;
  int64_t heads = 4;
  int64_t mlp_dim = 256;
};

class ViTTiny : public Classifier {
 public:
  // Throws std::invalid_argument naming the field for a shape it cannot build.
  ViTTiny(int64_t in_channels, int64_t height, int64_t width, int64_t num_classes, ViTTinyOptions options = {});

  at::Tensor forward(const at::Tensor& images) override;

  int64_t patch() const { return patch_; }
  int64_t tokens() const { return tokens_; }  // patches + the class token

 private:
  at::Tensor patchify(const at::Tensor& images) const;  // [N, C, H, W] → [N, patches, C·p·p]

  int64_t in_channels_, height_, width_, patch_, tokens_;
  torch::nn::Linear patch_embed_{nullptr}, head_{nullptr};
  at::Tensor cls_token_, pos_embed_;
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
};

}  // namespace cddp
