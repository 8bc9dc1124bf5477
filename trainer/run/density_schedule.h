// density_schedule.h — Deep Gradient Compression's warm-up of the density (Lin et al. 2018,
// §3.3 "warm-up training"): dense (1.0) for the first D = warmup_dense_steps steps, then
// ratio^((s − D + 1)/M) for M = warmup_decay_steps steps (an exponential decay reaching
// `ratio` at the last one), then the configured densities (-1, "no override").
//
// It also words the log line of a change, at info level at the phase changes and debug
// otherwise. It will not set the density on the optimizer; the run loop does.
#pragma once

#include "config/train_config.h"

#include <cstdint>
#include <optional>
#include <string>

namespace cddp::train {

class DensitySchedule {
 public:
  explicit DensitySchedule(const CompressionConfig& compression);

  // The density override for 0-based step `step`: in (0, 1], or -1 for the configured ones
  // (always -1 for dense training).
  double at(int64_t step) const;

  struct Change {
    bool phase = false;  // a phase starts here (dense, decaying, configured): log at info
    std::string text;    // "density warm-up: step 3 uses density 0.1, decaying to ..."
  };
  // The log line when step `step` switches from density `previous` (-2: nothing set yet) to
  // `density`; nothing when neither is a warm-up density (both configured).
  std::optional<Change> describe_change(int64_t step, double previous, double density) const;

 private:
  bool dense_;
  double ratio_;
  int64_t dense_steps_, decay_steps_;
};

}  // namespace cddp::train
