// threshold_compressor.cpp — ThresholdCompressor: one pass collecting |x| ≥ τ in index order.
#include "threshold_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <vector>

namespace cddp::threshold {

extern const ParamSpec kThresholdParams[];
extern const size_t kThresholdParamCount;

ThresholdCompressor::ThresholdCompressor(const ParamMap& params) {
  tau_ = ParamReader("threshold", kThresholdParams, kThresholdParamCount, params).get_double("tau");
}

Compressed ThresholdCompressor::compress(const at::Tensor& grad, const CompressContext& ctx) {
  TORCH_CHECK(grad.is_cpu(), "threshold: parameter '", ctx.param_name, "' is on ", grad.device(),
              "; threshold runs on CPU");
  TORCH_CHECK(grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kDouble, "threshold: parameter '",
              ctx.param_name, "' is ", grad.scalar_type(), "; expected float32 or float64");
  const at::Tensor x = grad.contiguous().view(-1);
  Compressed out;
  out.numel = x.numel();
  out.shape = grad.sizes().vec();
  out.dtype = grad.scalar_type();
  const at::ScalarType index_type = index_dtype_for(out.numel);
  std::vector<int64_t> kept;
  bool nan = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "threshold_select", [&] {
    const scalar_t* v = x.data_ptr<scalar_t>();
    const scalar_t tau = static_cast<scalar_t>(tau_);
    for (int64_t i = 0; i < out.numel; ++i) {
      nan = nan || std::isnan(v[i]);
      if (std::fabs(v[i]) >= tau) kept.push_back(i);  // |x| ≥ τ
    }
  });
  TORCH_CHECK(!nan, "threshold: NaN in parameter '", ctx.param_name, "' at step ", ctx.step);
  at::Tensor idx = at::from_blob(kept.data(), {int64_t(kept.size())}, at::kLong).clone();
  out.values = x.index_select(0, idx);
  out.indices = idx.to(index_type);
  return out;
}

}  // namespace cddp::threshold
