// bitwise_equal.h — the equality the bitwise tests mean: same dtype, same shape, the same bytes.
// -0 and +0 differ and a NaN equals the same NaN, which at::equal and allclose do not say.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstring>

namespace cddp::testing {

inline bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor x = a.contiguous(), y = b.contiguous();
  // Empty tensors may have null data: memcmp(null, null, 0) is undefined behaviour.
  return x.numel() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

}  // namespace cddp::testing
