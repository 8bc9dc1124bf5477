// mlp.cpp — MLP: flatten → (Linear → ReLU)* → Linear. No dropout, no normalization.
#include <cddp/models/mlp.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace cddp {

MLP::MLP(int64_t in_features, std::vector<int64_t> hidden, int64_t num_classes)
    : Classifier("MLP"), in_features_(in_features), hidden_(std::move(hidden)), num_classes_(num_classes) {
  if (in_features_ < 1) throw std::invalid_argument("mlp: in_features must be >= 1, got " + std::to_string(in_features_));
  if (num_classes_ < 1) throw std::invalid_argument("mlp: num_classes must be >= 1, got " + std::to_string(num_classes_));
  int64_t in = in_features_;
  for (size_t i = 0; i <= hidden_.size(); ++i) {
    const bool last = i == hidden_.size();
    const int64_t out = last ? num_classes_ : hidden_[i];
    if (out < 1) {
      throw std::invalid_argument("mlp: hidden width " + std::to_string(i) + " must be >= 1, got " +
                                  std::to_string(out));
    }
    layers_.push_back(register_module("fc" + std::to_string(i + 1), torch::nn::Linear(in, out)));
    in = out;
  }
}

at::Tensor MLP::forward(const at::Tensor& images) {
  at::Tensor x = images.flatten(1);
  if (x.size(1) != in_features_) {
    throw std::invalid_argument("mlp: expected " + std::to_string(in_features_) + " input features per image, got " +
                                std::to_string(x.size(1)));
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = layers_[i]->forward(x);
    if (i + 1 < layers_.size()) x = x.relu();
  }
  return x;
}

}  // namespace cddp
