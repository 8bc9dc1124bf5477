// vit_tiny.cpp — ViTTiny: patchify, embed, class token and positions, blocks, head on the class
// token. It does not resize or pad images: H and W fixed at construction fix the token count.
#include <cddp/models/vit_tiny.h>

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace cddp {
namespace {

int64_t choose_patch(int64_t requested, int64_t h, int64_t w) {
  if (requested > 0) {
    if (h % requested != 0 || w % requested != 0)
      throw std::invalid_argument("vit_tiny: patch " + std::to_string(requested) + " does not divide the " +
                                  std::to_string(h) + "x" + std::to_string(w) + " input");
    return requested;
  }
  for (int64_t p : {7, 4})
    if (h % p == 0 && w % p == 0) return p;
  throw std::invalid_argument("vit_tiny: neither patch 7 nor 4 divides the " + std::to_string(h) + "x" +
                              std::to_string(w) + " input; set a patch that does");
}

}  // namespace

ViTTiny::ViTTiny(int64_t in_channels, int64_t height, int64_t width, int64_t num_classes, ViTTinyOptions o)
    : Classifier("ViTTiny"), in_channels_(in_channels), height_(height), width_(width) {
  if (in_channels < 1) throw std::invalid_argument("vit_tiny: in_channels must be >= 1, got " + std::to_string(in_channels));
  if (num_classes < 1) throw std::invalid_argument("vit_tiny: num_classes must be >= 1, got " + std::to_string(num_classes));
  if (o.depth < 1) throw std::invalid_argument("vit_tiny: depth must be >= 1, got " + std::to_string(o.depth));
  patch_ = choose_patch(o.patch, height, width);
  tokens_ = (height / patch_) * (width / patch_) + 1;
  patch_embed_ = register_module("patch_embed", torch::nn::Linear(in_channels * patch_ * patch_, o.dim));
  // ViT's initialisation of the learned embeddings: N(0, 0.02²).
  cls_token_ = register_parameter("cls_token", at::randn({1, 1, o.dim}) * 0.02);
  pos_embed_ = register_parameter("pos_embed", at::randn({1, tokens_, o.dim}) * 0.02);
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth; ++i) blocks_->push_back(TransformerBlock(o.dim, o.heads, o.mlp_dim));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim})));
  head_ = register_module("head", torch::nn::Linear(o.dim, num_classes));
}

at::Tensor ViTTiny::patchify(const at::Tensor& images) const {
  if (images.dim() != 4 || images.size(1) != in_channels_ || images.size(2) != height_ || images.size(3) != width_)
    throw std::invalid_argument("vit_tiny: input of shape " + c10::str(images.sizes()) + " does not match the [N, " +
                                std::to_string(in_channels_) + ", " + std::to_string(height_) + ", " +
                                std::to_string(width_) + "] the model was built for");
  const int64_t n = images.size(0), gh = height_ / patch_, gw = width_ / patch_;
  // [N, C, gh, p, gw, p] → [N, gh, gw, C, p, p] → [N, gh·gw, C·p·p]
  return images.reshape({n, in_channels_, gh, patch_, gw, patch_})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({n, gh * gw, in_channels_ * patch_ * patch_});
}

at::Tensor ViTTiny::forward(const at::Tensor& images) {
  const at::Tensor patches = patch_embed_->forward(patchify(images));  // [N, patches, dim]
  at::Tensor x = at::cat({cls_token_.expand({images.size(0), 1, cls_token_.size(2)}).to(patches.scalar_type()), patches}, 1);
  x = x + pos_embed_;
  for (const auto& block : *blocks_) x = block->as<TransformerBlock>()->forward(x);
  return head_->forward(norm_->forward(x.select(1, 0)));  // the class token
}

}  // namespace cddp
