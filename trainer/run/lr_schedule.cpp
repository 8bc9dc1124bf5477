// lr_schedule.cpp — see lr_schedule.h. The expressions keep the evaluation order the
// trainer has always used, so that a run gives the same bits.
#include "run/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace cddp::train {

LrSchedule::LrSchedule(const OptimizerConfig& o, int64_t total_steps)
    : kind_(o.schedule == "step" ? Kind::Step : o.schedule == "cosine" ? Kind::Cosine : Kind::Constant),
      lr_(o.lr),
      gamma_(o.gamma),
      min_lr_(o.min_lr),
      step_size_(o.step_size),
      warmup_steps_(o.warmup_steps),
      total_steps_(total_steps) {}

double LrSchedule::at(int64_t step) const {
  if (warmup_steps_ > 0 && step < warmup_steps_) return lr_ * double(step + 1) / double(warmup_steps_);
  switch (kind_) {
    case Kind::Step:
      return lr_ * std::pow(gamma_, double(step / step_size_));
    case Kind::Cosine: {
      const double span = double(std::max<int64_t>(1, total_steps_ - warmup_steps_));
      const double p = std::clamp(double(step - warmup_steps_) / span, 0.0, 1.0);
      return min_lr_ + (lr_ - min_lr_) * 0.5 * (1.0 + std::cos(M_PI * p));
    }
    case Kind::Constant:
      break;
  }
  return lr_;
}

}  // namespace cddp::train
