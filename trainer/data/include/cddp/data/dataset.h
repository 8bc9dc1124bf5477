// dataset.h — an in-memory labelled image set, the unit the loaders produce and the samplers
// index into. Plain data: it will not load, normalize, shuffle or move itself to a device.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace cddp {

struct Dataset {
  std::string name;         // canonical dataset name: "fashion_mnist", "mnist", "cifar10", "synthetic"
  at::Tensor images;        // [N, C, H, W] float32, contiguous, normalized with the dataset's mean/std
  at::Tensor labels;        // [N] int64 in [0, num_classes)
  int64_t num_classes = 10;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  int64_t channels() const { return images.defined() ? images.size(1) : 0; }
  int64_t height() const { return images.defined() ? images.size(2) : 0; }
  int64_t width() const { return images.defined() ? images.size(3) : 0; }
};

}  // namespace cddp
