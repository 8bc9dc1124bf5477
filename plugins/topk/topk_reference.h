// topk_reference.h — the plain, obviously-correct top-k by magnitude built from ATen ops.
// It is the test oracle for the fast radix selection and the fallback for dtypes and devices
// the fast path does not cover. Exact; ties break by lower index; output sorted by index.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

namespace cddp::topk {

// (indices int64 [k] ascending, magnitudes are not returned). x: any shape, any strides.
at::Tensor topk_reference_indices(const at::Tensor& x, int64_t k);

}  // namespace cddp::topk
