// lr_schedule.h — the learning rate of each optimizer step from [optimizer]: an optional
// linear warm-up (lr·(s+1)/warmup_steps), then "constant", "step" (lr·gamma^⌊s/step_size⌋)
// or "cosine" (SGDR's annealing without restarts, Loshchilov & Hutter 2017:
// min_lr + (lr − min_lr)·(1 + cos(π·p))/2, p the fraction of the post-warm-up steps done).
//
// The schedule name is parsed once here, not at every step. It will not set the rate on an
// optimizer; the run loop does.
#pragma once

#include "config/train_config.h"

#include <cstdint>

namespace cddp::train {

class LrSchedule {
 public:
  // ConfigError-free: the config loader has already checked the schedule's name and values.
  LrSchedule(const OptimizerConfig& optimizer, int64_t total_steps);

  // The rate for 0-based step `step`.
  double at(int64_t step) const;

 private:
  enum class Kind { Constant, Step, Cosine };
  Kind kind_;
  double lr_, gamma_, min_lr_;
  int64_t step_size_, warmup_steps_, total_steps_;
};

}  // namespace cddp::train
