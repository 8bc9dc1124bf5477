// topk_reference.cpp — see topk_reference.h.
#include "topk_reference.h"

#include <ATen/ATen.h>

namespace cddp::topk {

at::Tensor topk_reference_indices(const at::Tensor& x, int64_t k) {
  // Selection runs on |x| in float32 or float64: half/bfloat16 widen exactly, so ties survive.
  at::Tensor a = x.reshape(-1).abs();
  if (a.scalar_type() != at::kDouble) a = a.to(at::kFloat);
  const int64_t n = a.numel();
  if (k >= n) return at::arange(n, a.options().dtype(at::kLong));
  // t = the k-th largest magnitude. Everything above t is in; of the elements equal to t,
  // the lowest indices fill the remaining places (the documented tie rule).
  at::Tensor t = std::get<0>(at::topk(a, k, /*dim=*/0, /*largest=*/true, /*sorted=*/false)).min();
  at::Tensor above = at::nonzero(a > t).view(-1);
  at::Tensor ties = at::nonzero(a == t).view(-1).narrow(0, 0, k - above.numel());
  return std::get<0>(at::sort(at::cat({above, ties})));
}

}  // namespace cddp::topk
