// randomk_compressor.cpp — see randomk_compressor.h.
#include "randomk_compressor.h"

#include "philox.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace cddp::randomk {

extern const ParamSpec kRandomKParams[];
extern const size_t kRandomKParamCount;

std::vector<int64_t> select_indices(uint64_t seed, int64_t step, int64_t param_index, int64_t n, int64_t k) {
  std::vector<int64_t> out;
  if (k <= 0 || n <= 0) return out;
  if (k >= n) {
    out.resize(n);
    for (int64_t i = 0; i < n; ++i) out[i] = i;
    return out;
  }
  // Key each element by (priority << 32 | index): ordering these keys orders by priority and
  // breaks ties by lower index. nth_element finds the k smallest in O(n) expected time.
  const philox::Key key = philox::randomk_key(seed);
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t block = 0; block * 4 < n; ++block) {
    philox::Block r = philox::philox4x32_10(philox::randomk_counter(uint64_t(block), step, param_index), key);
    for (int lane = 0; lane < 4 && block * 4 + lane < n; ++lane) {
      const int64_t i = block * 4 + lane;
      keys[size_t(i)] = (uint64_t(r.c[lane]) << 32) | uint64_t(uint32_t(i));
    }
  }
  if (n > (int64_t{1} << 32)) {
    // Index no longer fits the low word: fall back to a pair sort (correct, slower).
    std::vector<std::pair<uint32_t, int64_t>> pk(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pk[size_t(i)] = {uint32_t(keys[size_t(i)] >> 32), i};
    std::nth_element(pk.begin(), pk.begin() + k, pk.end());
    for (int64_t j = 0; j < k; ++j) out.push_back(pk[size_t(j)].second);
  } else {
    std::nth_element(keys.begin(), keys.begin() + k, keys.end());
    out.reserve(size_t(k));
    for (int64_t j = 0; j < k; ++j) out.push_back(int64_t(uint32_t(keys[size_t(j)])));
  }
  std::sort(out.begin(), out.end());
  return out;
}

RandomKCompressor::RandomKCompressor(const ParamMap& params) {
  ParamReader reader("randomk", kRandomKParams, kRandomKParamCount, params);
  ratio_ = reader.get_double("ratio", 0.01);
  scale_ = reader.get_bool("scale", false);
}

Compressed RandomKCompressor::compress(const at::Tensor& grad, const CompressContext& ctx) {
  TORCH_CHECK(grad.defined(), "randomk: undefined tensor for parameter '", ctx.param_name, "'");
  TORCH_CHECK(grad.device().is_cpu(), "randomk: parameter '", ctx.param_name, "' is on device ", grad.device(),
              ", which this build of the randomk plugin does not support (supported: cpu)");
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), "randomk: parameter '", ctx.param_name, "' has dtype ",
              grad.scalar_type(), "; expected a floating-point tensor");
  const double ratio = ctx.ratio > 0 ? ctx.ratio : ratio_;
  TORCH_CHECK(ratio > 0 && ratio <= 1, "randomk: invalid ratio ", ratio, " for parameter '", ctx.param_name, "'");
  Compressed out;
  out.numel = grad.numel();
  out.shape = grad.sizes().vec();
  out.dtype = grad.scalar_type();
  const int64_t k = k_for_ratio(ratio, out.numel);
  std::vector<int64_t> picked = select_indices(ctx.seed, ctx.step, ctx.param_index, out.numel, k);
  at::Tensor idx = at::empty({int64_t(picked.size())}, at::kLong);
  std::copy(picked.begin(), picked.end(), idx.data_ptr<int64_t>());
  out.values = grad.reshape(-1).index_select(0, idx);
  // Only the kept values are inspected: a NaN elsewhere never leaves this rank.
  TORCH_CHECK(!at::isnan(out.values).any().item<bool>(), "randomk: NaN in the gradient of parameter '",
              ctx.param_name, "' at step ", ctx.step);
  if (scale_ && k > 0) out.values.mul_(double(out.numel) / double(k));  // unbiased: E[D(C(x))] = x
  out.indices = idx.to(index_dtype_for(out.numel));
  return out;
}

}  // namespace cddp::randomk
