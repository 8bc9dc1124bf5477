// classifier.h — the interface every model of the trainer implements: images in, logits out.
//
// A Classifier is an ordinary torch::nn::Module whose parameters are registered under
// readable names ("fc1.weight", "layer1.0.conv1.weight"), so per-layer compression rules can
// match them with globs. It will not compute a loss, apply softmax, move itself to a device
// or know anything about data loading or compression.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>

namespace cddp {

class Classifier : public torch::nn::Module {
 public:
  Classifier() = default;
  explicit Classifier(std::string name) : torch::nn::Module(std::move(name)) {}
  ~Classifier() override = default;

  // images: [N, C, H, W] float (normalized) → logits [N, num_classes] (no softmax).
  virtual at::Tensor forward(const at::Tensor& images) = 0;
};

}  // namespace cddp
