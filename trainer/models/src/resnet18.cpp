// resnet18.cpp — CIFAR-style ResNet-18 and its private BasicBlock.
// No pretrained weights, no bottleneck blocks, no ImageNet stem.
#include <cddp/models/resnet18.h>

#include <torch/nn/modules/container/modulelist.h>

#include <stdexcept>
#include <string>

namespace cddp {
namespace detail {

// Two 3×3 conv + BN layers with an identity shortcut, or a 1×1 conv + BN projection
// ("downsample.0", "downsample.1") when the stride or the channel count changes.
class BasicBlock : public torch::nn::Module {
 public:
  BasicBlock(int64_t in_planes, int64_t planes, int64_t stride) : torch::nn::Module("BasicBlock") {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 3)
                                                           .stride(stride).padding(1).bias(false)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(planes, planes, 3)
                                                           .stride(1).padding(1).bias(false)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
    if (stride != 1 || in_planes != planes) {
      down_conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false));
      down_bn = torch::nn::BatchNorm2d(planes);
      torch::nn::ModuleList downsample;
      downsample->push_back(down_conv);
      downsample->push_back(down_bn);
      register_module("downsample", downsample);
    }
  }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor out = bn1->forward(conv1->forward(x)).relu();
    out = bn2->forward(conv2->forward(out));
    at::Tensor shortcut = down_conv ? down_bn->forward(down_conv->forward(x)) : x;
    return (out + shortcut).relu();
  }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, down_conv{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, down_bn{nullptr};
};

}  // namespace detail

ResNet18::ResNet18(int64_t in_channels, int64_t num_classes) : Classifier("ResNet18") {
  if (in_channels < 1) throw std::invalid_argument("resnet18: in_channels must be >= 1, got " + std::to_string(in_channels));
  if (num_classes < 1) throw std::invalid_argument("resnet18: num_classes must be >= 1, got " + std::to_string(num_classes));
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 64, 3)
                                                          .stride(1).padding(1).bias(false)));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
  const int64_t planes[4] = {64, 128, 256, 512};
  const int64_t strides[4] = {1, 2, 2, 2};
  int64_t in_planes = 64;
  for (int stage = 0; stage < 4; ++stage) {
    torch::nn::ModuleList layer;
    for (int b = 0; b < 2; ++b) {
      auto block = std::make_shared<detail::BasicBlock>(in_planes, planes[stage], b == 0 ? strides[stage] : 1);
      layer->push_back(block);
      blocks_.push_back(block);
      in_planes = planes[stage];
    }
    register_module("layer" + std::to_string(stage + 1), layer);
  }
  fc_ = register_module("fc", torch::nn::Linear(512, num_classes));
}

ResNet18::~ResNet18() = default;

at::Tensor ResNet18::forward(const at::Tensor& images) {
  at::Tensor x = bn1_->forward(conv1_->forward(images)).relu();
  for (auto& block : blocks_) x = block->forward(x);
  x = x.mean({2, 3});  // global average pooling → [N, 512]
  return fc_->forward(x);
}

}  // namespace cddp
