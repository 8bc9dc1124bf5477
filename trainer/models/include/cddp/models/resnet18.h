// resnet18.h — ResNet-18 in its CIFAR form (He et al. 2016, as commonly used for 32×32 input):
// a 3×3 stride-1 stem (conv1, bn1) with no max-pool, four stages of two BasicBlocks with
// 64/128/256/512 channels (strides 1/2/2/2), global average pooling and a linear head (fc).
//
// Parameter names follow torchvision: "conv1.weight", "bn1.weight", "layer1.0.conv1.weight",
// "layer2.0.downsample.0.weight" (1×1 projection conv), "layer2.0.downsample.1.weight" (its
// BatchNorm), "fc.weight". The BasicBlock class is private to resnet18.cpp. It will not load
// pretrained weights, and it has no ImageNet (7×7 stem + max-pool) variant.
#pragma once

#include <cddp/models/classifier.h>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace cddp {

namespace detail {
class BasicBlock;  // defined in resnet18.cpp
}

class ResNet18 : public Classifier {
 public:
  // in_channels 1 or 3 (any >= 1 works). Throws std::invalid_argument for counts < 1.
  ResNet18(int64_t in_channels, int64_t num_classes);
  ~ResNet18() override;

  at::Tensor forward(const at::Tensor& images) override;

 private:
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<std::shared_ptr<detail::BasicBlock>> blocks_;  // layer1.0, layer1.1, ..., layer4.1
  torch::nn::Linear fc_{nullptr};
};

}  // namespace cddp
