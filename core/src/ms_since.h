// ms_since.h — the one clock the stage timings (compress_ms, comm_ms) are read from, and the
// milliseconds since a point of it. Wall time on the steady clock: what a step costs the caller,
// waits included. Not a profiler: nothing here is per thread or per CPU.
#pragma once

#include <chrono>

namespace cddp::detail {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace cddp::detail
