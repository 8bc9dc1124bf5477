// topk_compressor.cpp — see topk_compressor.h.
#include "topk_compressor.h"

#include "topk_reference.h"

#include <ATen/ATen.h>

namespace cddp::topk {

namespace {
const char* kPlugin = "topk";
}

TopKCompressor::TopKCompressor(const ParamMap& params) {
  extern const ParamSpec kTopKParams[];
  extern const size_t kTopKParamCount;
  ParamReader reader(kPlugin, kTopKParams, kTopKParamCount, params);
  ratio_ = reader.get_double("ratio", 0.01);
  if (!(ratio_ > 0 && ratio_ <= 1)) reader.fail("parameter 'ratio' must be in (0, 1], got " + std::to_string(ratio_));
}

std::vector<c10::DeviceType> TopKCompressor::supported_devices() const { return {c10::DeviceType::CPU}; }

int64_t TopKCompressor::k_for(const at::Tensor& grad, const CompressContext& ctx) const {
  double ratio = ctx.ratio > 0 ? ctx.ratio : ratio_;
  TORCH_CHECK(ratio > 0 && ratio <= 1, "topk: invalid ratio ", ratio, " for parameter '", ctx.param_name,
              "'; expected 0 < ratio <= 1");
  return k_for_ratio(ratio, grad.numel());
}

void TopKCompressor::check_input(const at::Tensor& grad, const CompressContext& ctx) const {
  TORCH_CHECK(grad.defined(), "topk: undefined tensor for parameter '", ctx.param_name, "'");
  TORCH_CHECK(grad.device().is_cpu(), "topk: parameter '", ctx.param_name, "' is on device ", grad.device(),
              ", which this build of the topk plugin does not support (supported: cpu)");
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), "topk: parameter '", ctx.param_name, "' has dtype ",
              grad.scalar_type(), "; expected a floating-point tensor (float, double, half, bfloat16)");
  TORCH_CHECK(!at::isnan(grad).any().item<bool>(), "topk: NaN in the gradient of parameter '", ctx.param_name,
              "' at step ", ctx.step);
}

Compressed TopKCompressor::compress(const at::Tensor& grad, const CompressContext& ctx) {
  check_input(grad, ctx);
  Compressed out;
  out.numel = grad.numel();
  out.shape = grad.sizes().vec();
  out.dtype = grad.scalar_type();
  const at::ScalarType index_type = index_dtype_for(out.numel);
  if (out.numel == 0) {
    out.values = at::empty({0}, grad.options());
    out.indices = at::empty({0}, grad.options().dtype(index_type));
    return out;
  }
  at::Tensor idx = topk_reference_indices(grad, k_for(grad, ctx));
  out.values = grad.reshape(-1).index_select(0, idx);
  out.indices = idx.to(index_type);
  return out;
}

Compressed TopKCompressor::compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                                  const CompressContext& ctx) {
  return Compressor::compress_with_feedback(grad, residual, ctx);
}

bool TopKCompressor::has_fused_feedback() const noexcept { return false; }

}  // namespace cddp::topk
