// mlp.h — a fully connected classifier: flatten → (Linear → ReLU)* → Linear.
//
// Layers are named fc1, fc2, ..., fcK where fcK is the output layer (K = hidden.size() + 1).
// With no hidden layers it is multinomial logistic regression. It will not add dropout,
// normalization or any layer the widths do not ask for.
#pragma once

#include <cddp/models/classifier.h>

#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <vector>

namespace cddp {

class MLP : public Classifier {
 public:
  // in_features = C·H·W of the input images. Throws std::invalid_argument for a width < 1.
  MLP(int64_t in_features, std::vector<int64_t> hidden, int64_t num_classes);

  at::Tensor forward(const at::Tensor& images) override;

  int64_t in_features() const { return in_features_; }
  const std::vector<int64_t>& hidden() const { return hidden_; }
  int64_t num_classes() const { return num_classes_; }

 private:
  int64_t in_features_;
  std::vector<int64_t> hidden_;
  int64_t num_classes_;
  std::vector<torch::nn::Linear> layers_;  // fc1..fcK, registered as submodules
};

}  // namespace cddp
