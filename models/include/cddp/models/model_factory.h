// model_factory.h — builds a Classifier from a name and the input/output shape.
//
// Names: "mlp" (widths from `hidden`), "simple_cnn", "resnet18" (CIFAR-style), "vit_tiny" (a
// small vision transformer, vit_tiny.h: patch 7 on 28×28, patch 4 on 32×32). The factory
// will not move the model to a device, initialize it from a checkpoint or seed any RNG:
// parameters are drawn from LibTorch's default generator, so seed it (torch::manual_seed)
// before calling when runs must be reproducible, and broadcast rank 0's parameters.
#pragma once

#include <cddp/models/classifier.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cddp {

struct ModelSpec {
  std::string name;
  std::vector<int64_t> hidden = {256, 128};  // mlp only
  int64_t in_channels = 1, height = 28, width = 28, num_classes = 10;
};

// Throws std::invalid_argument listing the valid names for an unknown name, or naming the
// bad field for an impossible shape.
std::shared_ptr<Classifier> make_model(const ModelSpec& spec);

// The names make_model accepts, in a stable order.
std::vector<std::string> model_names();

}  // namespace cddp
