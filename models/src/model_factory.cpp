// model_factory.cpp — name → Classifier. It does not seed, move or load models.
#include <cddp/models/model_factory.h>

#include <cddp/models/mlp.h>
#include <cddp/models/resnet18.h>
#include <cddp/models/simple_cnn.h>
#include <cddp/models/vit_tiny.h>

#include <stdexcept>

namespace cddp {

std::vector<std::string> model_names() { return {"mlp", "simple_cnn", "resnet18", "vit_tiny"}; }

std::shared_ptr<Classifier> make_model(const ModelSpec& spec) {
  auto check = [&](int64_t v, const char* field) {
    if (v < 1) {
      throw std::invalid_argument("model '" + spec.name + "': " + field + " must be >= 1, got " + std::to_string(v));
    }
  };
  check(spec.in_channels, "in_channels");
  check(spec.height, "height");
  check(spec.width, "width");
  check(spec.num_classes, "num_classes");
  if (spec.name == "mlp") {
    return std::make_shared<MLP>(spec.in_channels * spec.height * spec.width, spec.hidden, spec.num_classes);
  }
  if (spec.name == "simple_cnn") {
    return std::make_shared<SimpleCNN>(spec.in_channels, spec.height, spec.width, spec.num_classes);
  }
  if (spec.name == "resnet18") {
    return std::make_shared<ResNet18>(spec.in_channels, spec.num_classes);
  }
  if (spec.name == "vit_tiny") {
    return std::make_shared<ViTTiny>(spec.in_channels, spec.height, spec.width, spec.num_classes);
  }
  std::string valid;
  for (const auto& n : model_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model '" + spec.name + "'; valid names: " + valid);
}

}  // namespace cddp
