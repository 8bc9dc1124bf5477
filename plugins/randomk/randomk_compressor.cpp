// randomk_compressor.cpp — see randomk_compressor.h.
#include "randomk_compressor.h"
#if defined(CDDP_TOPK_WITH_CUDA)
#include "topk_cuda_bridge.h"
#endif

#include <ATen/ATen.h>


namespace cddp::randomk {

extern const ParamSpec kRandomKParams[];
extern const size_t kRandomKParamCount;

RandomKCompressor::RandomKCompressor(const ParamMap& params) {
  ParamReader reader("randomk", kRandomKParams, kRandomKParamCount, params);
  ratio_ = reader.get_double("ratio");
  scale_ = reader.get_bool("scale");
}

Compressed RandomKCompressor::compress(const at::Tensor& grad, const CompressContext& ctx) {
  TORCH_CHECK(grad.defined(), "randomk: undefined tensor for parameter '", ctx.param_name, "'");
#if defined(CDDP_TOPK_WITH_CUDA)
  TORCH_CHECK(grad.device().is_cpu() || grad.device().is_cuda(), "randomk: parameter '", ctx.param_name,
              "' is on device ", grad.device(), ", which the randomk plugin does not support (supported: cpu, cuda)");
#else
  TORCH_CHECK(grad.device().is_cpu(), "randomk: parameter '", ctx.param_name, "' is on device ", grad.device(),
              ", which this build of the randomk plugin does not support (supported: cpu)");
#endif
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), "randomk: parameter '", ctx.param_name, "' has dtype ",
              grad.scalar_type(), "; expected a floating-point tensor");
  const double ratio = ctx.ratio > 0 ? ctx.ratio : ratio_;
  TORCH_CHECK(ratio > 0 && ratio <= 1, "randomk: invalid ratio ", ratio, " for parameter '", ctx.param_name, "'");
  Compressed out;
  out.numel = grad.numel();
  out.shape = grad.sizes().vec();
  out.dtype = grad.scalar_type();
  const int64_t k = k_for_ratio(ratio, out.numel);
  at::Tensor idx;
#if defined(CDDP_TOPK_WITH_CUDA)
  if (grad.is_cuda())  // same Philox priorities and tie rule as the CPU path: same indices
    idx = topk_cuda::randomk_cuda_indices(ctx.seed, ctx.step, ctx.param_index, out.numel, k, grad.device()).to(at::kLong);
#endif
  if (!idx.defined()) {
    idx = at::empty({k}, at::kLong);
    if (k > 0) radix_.select_smallest_philox(ctx.seed, ctx.step, ctx.param_index, out.numel, k, idx.data_ptr<int64_t>());
  }
  out.values = grad.reshape(-1).index_select(0, idx);
  // Only the kept values are inspected: a NaN elsewhere never leaves this rank.
  TORCH_CHECK(grad.is_cuda() || !at::isnan(out.values).any().item<bool>(), "randomk: NaN in the gradient of parameter '",
              ctx.param_name, "' at step ", ctx.step);
  if (scale_ && k > 0) out.values.mul_(double(out.numel) / double(k));  // unbiased: E[D(C(x))] = x
  out.indices = idx.to(index_dtype_for(out.numel));
  return out;
}

}  // namespace cddp::randomk
