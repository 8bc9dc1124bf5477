// run_support.h — small helpers every part of cddp-train's run uses: the wall clock, the
// logger of a RunContext, an exception's text without LibTorch's backtrace, the LibTorch
// version string and the device a config resolves to.
//
// It will not decide anything about training; it only removes repetition between the run
// loop, evaluation, checkpoints and the plugin listing.
#pragma once

#include "config/train_config.h"
#include "trainer.h"

#include <chrono>
#include <exception>
#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace cddp::train {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0);

// ctx.log, or a logger that drops everything when main gave none.
std::shared_ptr<spdlog::logger> logger_of(const RunContext& ctx);

// c10::Error's message without its backtrace; what() for anything else.
std::string error_text(const std::exception& e);

// "1.13.1": the LibTorch this build runs on (checkpoints record it).
std::string torch_version();

// "cpu" or "cuda": run.device, with "auto" decided by what this process sees (logged when
// `log` is given). ConfigError when "cuda" is asked for and there is none.
std::string resolve_device(const TrainConfig& config, spdlog::logger* log);

// The value of `key` in `env`, or null.
const char* env_value(const EnvMap& env, const char* key);

}  // namespace cddp::train
