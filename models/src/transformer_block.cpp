// transformer_block.cpp — TransformerBlock: pre-norm multi-head self-attention and a GELU MLP,
// each with a residual connection. No dropout, no mask.
#include <cddp/models/transformer_block.h>

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace cddp {

TransformerBlock::TransformerBlock(int64_t dim, int64_t heads, int64_t mlp_dim) : dim_(dim), heads_(heads) {
  if (dim < 1 || heads < 1 || dim % heads != 0)
    throw std::invalid_argument("transformer block: dim (" + std::to_string(dim) +
                                ") must be a positive multiple of heads (" + std::to_string(heads) + ")");
  if (mlp_dim < 1) throw std::invalid_argument("transformer block: mlp_dim must be >= 1, got " + std::to_string(mlp_dim));
  norm1_ = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  qkv_ = register_module("attn_qkv", torch::nn::Linear(dim, 3 * dim));
  proj_ = register_module("attn_proj", torch::nn::Linear(dim, dim));
  norm2_ = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  fc1_ = register_module("mlp_fc1", torch::nn::Linear(dim, mlp_dim));
  fc2_ = register_module("mlp_fc2", torch::nn::Linear(mlp_dim, dim));
}

// Scaled dot-product attention (Vaswani et al. 2017, eq. 1), heads_ heads of dim_/heads_ each.
at::Tensor TransformerBlock::self_attention(const at::Tensor& x) {
  const int64_t n = x.size(0), t = x.size(1), d_head = dim_ / heads_;
  // [N, T, 3·dim] → [3, N, heads, T, d_head]
  const at::Tensor qkv = qkv_->forward(x).reshape({n, t, 3, heads_, d_head}).permute({2, 0, 3, 1, 4});
  const at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  const at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(d_head)));
  const at::Tensor mixed = at::matmul(at::softmax(scores, -1), v);  // [N, heads, T, d_head]
  return proj_->forward(mixed.transpose(1, 2).reshape({n, t, dim_}));
}

at::Tensor TransformerBlock::forward(const at::Tensor& tokens) {
  at::Tensor x = tokens + self_attention(norm1_->forward(tokens));
  return x + fc2_->forward(at::gelu(fc1_->forward(norm2_->forward(x))));
}

}  // namespace cddp
