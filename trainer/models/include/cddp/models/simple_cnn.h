// simple_cnn.h — a small LeNet-style convolutional classifier:
//   conv1 (C→32, 5×5) → ReLU → max-pool 2 → conv2 (32→64, 5×5) → ReLU → max-pool 2
//   → flatten → fc1 (→512) → ReLU → fc2 (→classes)
// Convolutions are unpadded, so 28×28 input gives 64·4·4 features and 32×32 gives 64·5·5.
// It will not accept inputs smaller than 16×16 (the feature map would vanish), and it has no
// batch normalization or dropout.
#pragma once

#include <cddp/models/classifier.h>

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>

namespace cddp {

class SimpleCNN : public Classifier {
 public:
  // Throws std::invalid_argument when height or width < 16 or a count is < 1.
  SimpleCNN(int64_t in_channels, int64_t height, int64_t width, int64_t num_classes);

  at::Tensor forward(const at::Tensor& images) override;

  int64_t flat_features() const { return flat_features_; }

 private:
  int64_t flat_features_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

}  // namespace cddp
