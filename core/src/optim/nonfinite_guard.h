// nonfinite_guard.h — what a step does when some gradient holds a NaN or an Inf, on any rank:
// with nonfinite = "error" every rank throws (the rank that saw it names the parameter), with
// "skip_step" every rank skips the step. Decided before anything has changed, so a skipped step
// leaves parameters, momentum, residuals and the step count as they were. Internal to
// core/src/optim.
//
// It will not repair, clip or zero a gradient.
#pragma once

#include "step_plan.h"
#include "typed_options.h"

#include <cstdint>
#include <vector>

namespace cddp::detail {

// True when the step must be skipped. A collective (GradientExchange::any_rank): every rank
// calls it every step, and every rank takes the same decision. Throws for NonfinitePolicy::Error.
bool nonfinite_skips_step(const std::vector<TensorStep>& tensors, GradientExchange& exchange, NonfinitePolicy policy,
                          int64_t step, int rank);

}  // namespace cddp::detail
