// models_test.cpp — cddp_models: forward shapes of every model on 1x28x28 and 3x32x32,
// parameter names the per-layer rules rely on, parameter counts, factory errors.
// It does not train anything.
#include <cddp/models/model_factory.h>
#include <cddp/models/mlp.h>

#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>

namespace {

std::set<std::string> param_names(const cddp::Classifier& model) {
  std::set<std::string> names;
  for (const auto& item : model.named_parameters()) names.insert(item.key());
  return names;
}

int64_t param_count(const cddp::Classifier& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

struct Shape {
  int64_t c, h, w;
};

}  // namespace

TEST(Models, ForwardShapesForEveryModelAndInput) {
  for (const std::string name : {"mlp", "simple_cnn", "resnet18", "vit_tiny"}) {
    for (const Shape s : {Shape{1, 28, 28}, Shape{3, 32, 32}}) {
      SCOPED_TRACE(name + " " + std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w));
      cddp::ModelSpec spec;
      spec.name = name;
      spec.in_channels = s.c;
      spec.height = s.h;
      spec.width = s.w;
      spec.num_classes = 10;
      auto model = cddp::make_model(spec);
      ASSERT_NE(model, nullptr);
      const at::Tensor logits = model->forward(at::randn({2, s.c, s.h, s.w}));
      ASSERT_EQ(logits.dim(), 2);
      EXPECT_EQ(logits.size(0), 2);
      EXPECT_EQ(logits.size(1), 10);
      EXPECT_EQ(logits.scalar_type(), at::kFloat);
      // Gradients reach every parameter.
      logits.sum().backward();
      for (const auto& item : model->named_parameters()) {
        EXPECT_TRUE(item.value().grad().defined()) << item.key();
      }
    }
  }
}

TEST(Models, MlpNamesAndWidths) {
  cddp::ModelSpec spec;
  spec.name = "mlp";
  auto model = cddp::make_model(spec);
  EXPECT_EQ(param_names(*model), (std::set<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                                        "fc3.weight", "fc3.bias"}));
  EXPECT_EQ(param_count(*model), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);

  spec.hidden = {64};
  spec.num_classes = 5;
  model = cddp::make_model(spec);
  EXPECT_EQ(param_names(*model), (std::set<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(model->forward(at::randn({3, 1, 28, 28})).size(1), 5);

  spec.hidden = {};  // logistic regression
  model = cddp::make_model(spec);
  EXPECT_EQ(param_names(*model), (std::set<std::string>{"fc1.weight", "fc1.bias"}));
  EXPECT_EQ(param_count(*model), 784 * 5 + 5);

  spec.hidden = {0};
  EXPECT_THROW(cddp::make_model(spec), std::invalid_argument);
}

TEST(Models, SimpleCnnNames) {
  cddp::ModelSpec spec;
  spec.name = "simple_cnn";
  auto model = cddp::make_model(spec);
  EXPECT_EQ(param_names(*model),
            (std::set<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                   "fc1.bias", "fc2.weight", "fc2.bias"}));
  // 28x28: 64·4·4 features into fc1.
  EXPECT_EQ(model->named_parameters()["fc1.weight"].sizes().vec(), (std::vector<int64_t>{512, 64 * 4 * 4}));
  spec.height = spec.width = 12;
  EXPECT_THROW(cddp::make_model(spec), std::invalid_argument);
}

TEST(Models, ResNet18NamesFollowTorchvision) {
  cddp::ModelSpec spec;
  spec.name = "resnet18";
  spec.in_channels = 3;
  spec.height = spec.width = 32;
  auto model = cddp::make_model(spec);
  const auto names = param_names(*model);
  for (const char* expected :
       {"conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
        "layer1.1.conv2.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight",
        "layer2.0.downsample.1.bias", "layer3.1.bn2.bias", "layer4.0.downsample.0.weight", "layer4.1.conv2.weight",
        "fc.weight", "fc.bias"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
  EXPECT_FALSE(names.count("layer1.0.downsample.0.weight"));  // identity shortcut in stage 1
  EXPECT_EQ(names.size(), 62u);
  EXPECT_EQ(param_count(*model), 11173962);  // the usual CIFAR ResNet-18 count
  // BatchNorm buffers are registered too (for checkpoints).
  bool has_running_mean = false;
  for (const auto& b : model->named_buffers()) has_running_mean |= b.key() == "layer3.0.bn1.running_mean";
  EXPECT_TRUE(has_running_mean);

  spec.in_channels = 1;
  model = cddp::make_model(spec);
  EXPECT_EQ(param_count(*model), 11173962 - 2 * 64 * 9);
  model->eval();
  EXPECT_EQ(model->forward(at::randn({1, 1, 28, 28})).sizes().vec(), (std::vector<int64_t>{1, 10}));
}

TEST(Models, UnknownNameListsValidNames) {
  cddp::ModelSpec spec;
  spec.name = "vgg16";
  try {
    cddp::make_model(spec);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("vgg16"), std::string::npos) << what;
    for (const auto& n : cddp::model_names()) EXPECT_NE(what.find(n), std::string::npos) << what;
  }
  spec.name = "mlp";
  spec.num_classes = 0;
  EXPECT_THROW(cddp::make_model(spec), std::invalid_argument);
}

TEST(Models, MlpRejectsWrongInputSize) {
  cddp::MLP mlp(784, {32}, 10);
  EXPECT_THROW(mlp.forward(at::randn({2, 3, 32, 32})), std::invalid_argument);
}
