// density_schedule.cpp — see density_schedule.h. The decay exponent is computed as the
// trainer always has (same bits).
#include "run/density_schedule.h"

#include <fmt/format.h>

#include <cmath>

namespace cddp::train {

DensitySchedule::DensitySchedule(const CompressionConfig& c)
    : dense_(c.dense()), ratio_(c.ratio), dense_steps_(c.warmup_dense_steps), decay_steps_(c.warmup_decay_steps) {}

double DensitySchedule::at(int64_t step) const {
  if (dense_) return -1;
  const int64_t D = dense_steps_, M = decay_steps_;
  if (step < D) return 1.0;
  if (step < D + M) return std::pow(ratio_, double(step - D + 1) / double(M));
  return -1;
}

std::optional<DensitySchedule::Change> DensitySchedule::describe_change(int64_t step, double previous,
                                                                        double density) const {
  if (!(density > 0 || previous > 0)) return std::nullopt;
  Change c;
  c.phase = step == 0 || step == dense_steps_ || step == dense_steps_ + decay_steps_ || previous == -2;
  c.text = fmt::format("density warm-up: step {} uses {}{}", step + 1,
                       density > 0 ? fmt::format("density {:.6g}", density) : std::string("the configured density"),
                       c.phase && density > 0 && density < 1
                           ? fmt::format(", decaying to {:.6g} by step {}", ratio_, dense_steps_ + decay_steps_)
                           : std::string());
  return c;
}

}  // namespace cddp::train
