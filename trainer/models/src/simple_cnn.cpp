// simple_cnn.cpp — SimpleCNN: two unpadded 5×5 conv + max-pool stages and two linear layers.
// It does not resize its input: H and W fixed at construction determine fc1's width.
#include <cddp/models/simple_cnn.h>

#include <ATen/ops/max_pool2d.h>

#include <stdexcept>
#include <string>

namespace cddp {
namespace {
// 5×5 unpadded conv then 2×2 max-pool (floor).
int64_t stage(int64_t n) { return (n - 4) / 2; }
}  // namespace

SimpleCNN::SimpleCNN(int64_t in_channels, int64_t height, int64_t width, int64_t num_classes)
    : Classifier("SimpleCNN") {
  if (in_channels < 1) throw std::invalid_argument("simple_cnn: in_channels must be >= 1, got " + std::to_string(in_channels));
  if (num_classes < 1) throw std::invalid_argument("simple_cnn: num_classes must be >= 1, got " + std::to_string(num_classes));
  if (height < 16 || width < 16) {
    throw std::invalid_argument("simple_cnn: input must be at least 16x16, got " + std::to_string(height) + "x" +
                                std::to_string(width));
  }
  flat_features_ = 64 * stage(stage(height)) * stage(stage(width));
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 32, 5)));
  conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5)));
  fc1_ = register_module("fc1", torch::nn::Linear(flat_features_, 512));
  fc2_ = register_module("fc2", torch::nn::Linear(512, num_classes));
}

at::Tensor SimpleCNN::forward(const at::Tensor& images) {
  at::Tensor x = at::max_pool2d(conv1_->forward(images).relu(), {2, 2});
  x = at::max_pool2d(conv2_->forward(x).relu(), {2, 2});
  x = x.flatten(1);
  if (x.size(1) != flat_features_) {
    throw std::invalid_argument("simple_cnn: input of shape " + std::to_string(images.size(2)) + "x" +
                                std::to_string(images.size(3)) + " does not match the size the model was built for (" +
                                std::to_string(flat_features_) + " features after the conv stages, got " +
                                std::to_string(x.size(1)) + ")");
  }
  return fc2_->forward(fc1_->forward(x).relu());
}

}  // namespace cddp
