// transformer_block.h — one pre-norm transformer encoder block (Vaswani et al. 2017, "Attention
// is all you need"; the pre-norm placement of Dosovitskiy et al. 2021, "An image is worth 16x16
// words", ViT):
//     x = x + proj(MHSA(norm1(x)))        MHSA(y) = softmax(q·kᵀ / √d_head)·v, per head
//     x = x + fc2(GELU(fc1(norm2(x))))
// Parameters: norm1.{weight,bias}, attn_qkv.{weight,bias}, attn_proj.{weight,bias}, norm2.*,
// mlp_fc1.*, mlp_fc2.*. It will not mask tokens, use dropout, or add positions (ViTTiny does).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>

namespace cddp {

class TransformerBlock : public torch::nn::Module {
 public:
  // Throws std::invalid_argument unless dim is a positive multiple of heads and mlp_dim >= 1.
  TransformerBlock(int64_t dim, int64_t heads, int64_t mlp_dim);

  // tokens: [N, T, dim] → [N, T, dim].
  at::Tensor forward(const at::Tensor& tokens);

 private:
  at::Tensor self_attention(const at::Tensor& x);

  int64_t dim_, heads_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};

}  // namespace cddp
