// nonfinite_guard.cpp — the NaN/Inf decision, the same on every rank (nonfinite_guard.h).
#include "nonfinite_guard.h"

#include <ATen/ATen.h>

namespace cddp::detail {

bool nonfinite_skips_step(const std::vector<TensorStep>& tensors, GradientExchange& exchange, NonfinitePolicy policy,
                          int64_t step, int rank) {
  const TensorStep* bad = nullptr;
  for (const auto& t : tensors)
    if (!at::isfinite(t.g).all().item<bool>()) {
      bad = &t;
      break;
    }
  const bool anywhere = exchange.any_rank(bad != nullptr);  // every rank takes the same decision
  if (!anywhere) return false;
  if (policy == NonfinitePolicy::SkipStep) return true;
  if (bad)
    TORCH_CHECK(false, "non-finite gradient (NaN or Inf) in parameter '", bad->name, "' at step ", step, " on rank ",
                rank, "; set nonfinite = \"skip_step\" to skip such steps");
  TORCH_CHECK(false, "non-finite gradient (NaN or Inf) on another rank at step ", step, "; stopping on every rank");
}

}  // namespace cddp::detail
