// topk_compressor.cpp — see topk_compressor.h.
#include "topk_compressor.h"

#include "topk_reference.h"
#if defined(CDDP_TOPK_WITH_CUDA)
#include "topk_cuda_bridge.h"
#endif

#include <ATen/ATen.h>

namespace cddp::topk {

namespace {
const char* kPlugin = "topk";
}

TopKCompressor::TopKCompressor(const ParamMap& params) {
  extern const ParamSpec kTopKParams[];
  extern const size_t kTopKParamCount;
  ParamReader reader(kPlugin, kTopKParams, kTopKParamCount, params);
  ratio_ = reader.get_double("ratio");
  impl_ = reader.get_string("impl");
  if (impl_ != "auto" && impl_ != "cpu" && impl_ != "cuda")
    reader.fail("parameter 'impl' must be \"auto\", \"cpu\" or \"cuda\", got \"" + impl_ + "\"");
  if (!(ratio_ > 0 && ratio_ <= 1)) reader.fail("parameter 'ratio' must be in (0, 1], got " + std::to_string(ratio_));
}

std::vector<c10::DeviceType> TopKCompressor::supported_devices() const {
#if defined(CDDP_TOPK_WITH_CUDA)
  return {c10::DeviceType::CPU, c10::DeviceType::CUDA};
#else
  return {c10::DeviceType::CPU};
#endif
}

int64_t TopKCompressor::k_for(const at::Tensor& grad, const CompressContext& ctx) const {
  double ratio = ctx.ratio > 0 ? ctx.ratio : ratio_;
  TORCH_CHECK(ratio > 0 && ratio <= 1, "topk: invalid ratio ", ratio, " for parameter '", ctx.param_name,
              "'; expected 0 < ratio <= 1");
  return k_for_ratio(ratio, grad.numel());
}

namespace {
bool radix_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }
// A state tensor the fused CPU kernels can write in place beside `grad`: the same dtype and
// numel, contiguous, on the CPU.
bool writable_beside(const at::Tensor& grad, const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == grad.scalar_type() && t.is_contiguous() && t.numel() == grad.numel();
}
}  // namespace

void TopKCompressor::check_input(const at::Tensor& grad, const CompressContext& ctx) const {
  TORCH_CHECK(grad.defined(), "topk: undefined tensor for parameter '", ctx.param_name, "'");
#if defined(CDDP_TOPK_WITH_CUDA)
  TORCH_CHECK(grad.device().is_cpu() || grad.device().is_cuda(), "topk: parameter '", ctx.param_name,
              "' is on device ", grad.device(), ", which the topk plugin does not support (supported: cpu, cuda)");
#else
  TORCH_CHECK(grad.device().is_cpu(), "topk: parameter '", ctx.param_name, "' is on device ", grad.device(),
              ", which this build of the topk plugin does not support (supported: cpu; rebuild against a "
              "CUDA LibTorch for cuda)");
#endif
  TORCH_CHECK(impl_ == "auto" || grad.device().type() == c10::Device(impl_).type(), "topk: parameter '",
              ctx.param_name, "' is on ", grad.device(), " but the plugin was configured with impl = \"", impl_, "\"");
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), "topk: parameter '", ctx.param_name, "' has dtype ",
              grad.scalar_type(), "; expected a floating-point tensor (float, double, half, bfloat16)");
}

// An unfilled k-entry selection of `x`'s numel, shape and dtype, for a kernel to write.
static Compressed selection_for(const at::Tensor& x, int64_t k) {
  Compressed out;
  out.numel = x.numel();
  out.shape = x.sizes().vec();
  out.dtype = x.scalar_type();
  out.values = at::empty({k}, x.options());
  out.indices = at::empty({k}, x.options().dtype(index_dtype_for(out.numel)));
  return out;
}

// Runs kernel(values, indices) on `out`'s buffers (T values; int32 or int64 indices as out has
// them). The kernels report NaN with std::invalid_argument; the message gains the parameter's name.
template <class T, class Kernel>
static void fill_selection(Compressed& out, const CompressContext& ctx, Kernel&& kernel) {
  try {
    if (out.indices.scalar_type() == at::kLong) kernel(out.values.data_ptr<T>(), out.indices.data_ptr<int64_t>());
    else kernel(out.values.data_ptr<T>(), out.indices.data_ptr<int32_t>());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, "topk: NaN in the gradient of parameter '", ctx.param_name, "' at step ", ctx.step, " (",
                e.what(), ")");
  }
}

// Radix selection of `x` (contiguous float32/float64), optionally with fused error feedback.
static Compressed radix_select(kernels::RadixTopK& radix, const at::Tensor& x, at::Tensor* residual, int64_t k,
                               const CompressContext& ctx) {
  Compressed out = selection_for(x, k);
  const int64_t n = out.numel;
  if (out.dtype == at::kFloat) {
    float* r = residual ? residual->data_ptr<float>() : nullptr;
    fill_selection<float>(out, ctx, [&](float* v, auto* i) { radix.select_float(x.data_ptr<float>(), r, n, k, v, i); });
  } else {
    double* r = residual ? residual->data_ptr<double>() : nullptr;
    fill_selection<double>(out, ctx,
                           [&](double* v, auto* i) { radix.select_double(x.data_ptr<double>(), r, n, k, v, i); });
  }
  return out;
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
#if defined(CDDP_TOPK_WITH_CUDA)
  if (grad.is_cuda() && out.dtype == at::kFloat)  // fused radix select on the current stream, no host sync
    return topk_cuda::topk_cuda_compress_with_feedback(grad.contiguous(), nullptr, k_for(grad, ctx));
#endif
  if (radix_dtype(out.dtype) && grad.is_cpu())
    return radix_select(radix_, grad.contiguous(), nullptr, k_for(grad, ctx), ctx);
  TORCH_CHECK(!at::isnan(grad).any().item<bool>(), "topk: NaN in the gradient of parameter '", ctx.param_name,
              "' at step ", ctx.step);
  at::Tensor idx = topk_reference_indices(grad, k_for(grad, ctx));
  out.values = grad.reshape(-1).index_select(0, idx);
  out.indices = idx.to(index_type);
  return out;
}

Compressed TopKCompressor::compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                                  const CompressContext& ctx) {
  check_input(grad, ctx);
#if defined(CDDP_TOPK_WITH_CUDA)
  if (grad.is_cuda() && grad.scalar_type() == at::kFloat && residual.scalar_type() == at::kFloat &&
      residual.is_cuda() && residual.is_contiguous() && residual.numel() == grad.numel() && grad.numel() > 0) {
    Compressed out = topk_cuda::topk_cuda_compress_with_feedback(grad.contiguous(), &residual, k_for(grad, ctx));
    out.shape = residual.sizes().vec();
    return out;
  }
#endif
  const bool fusable = grad.is_cpu() && radix_dtype(grad.scalar_type()) && grad.numel() > 0 && writable_beside(grad, residual);
  if (!fusable) return Compressor::compress_with_feedback(grad, residual, ctx);
  // One pass computes acc = g + residual into `residual` while histogramming |acc|; the
  // selection then zeroes the chosen positions: residual = acc − D(C(acc)), bit for bit.
  Compressed out = radix_select(radix_, grad.contiguous(), &residual, k_for(grad, ctx), ctx);
  out.shape = residual.sizes().vec();
  return out;
}

Compressed TopKCompressor::compress_with_momentum_feedback(const at::Tensor& grad, at::Tensor& velocity,
                                                           double momentum, at::Tensor& residual,
                                                           const CompressContext& ctx) {
  check_input(grad, ctx);
  const int64_t n = grad.numel();
  const bool fusable = grad.is_cpu() && grad.scalar_type() == at::kFloat && grad.is_contiguous() && n > 0 &&
                       writable_beside(grad, velocity) && writable_beside(grad, residual);
  if (!fusable) return Compressor::compress_with_momentum_feedback(grad, velocity, momentum, residual, ctx);
  const int64_t k = k_for(grad, ctx);
  Compressed out = selection_for(residual, k);
  // ATen's mul_ by a Scalar computes in the tensor's float: the kernel gets the same factor.
  const float m = static_cast<float>(momentum);
  fill_selection<float>(out, ctx, [&](float* v, auto* i) {
    radix_.select_float_momentum(velocity.data_ptr<float>(), grad.data_ptr<float>(), m, residual.data_ptr<float>(), n, k,
                                 v, i);
  });
  return out;
}

bool TopKCompressor::has_fused_feedback() const noexcept { return true; }

}  // namespace cddp::topk
