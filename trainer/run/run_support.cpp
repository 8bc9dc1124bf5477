// run_support.cpp — see run_support.h. It will not read the process environment: the
// EnvMap main passed in is the only one looked at.
#include "run/run_support.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

namespace cddp::train {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::shared_ptr<spdlog::logger> logger_of(const RunContext& ctx) {
  if (ctx.log) return ctx.log;
  return std::make_shared<spdlog::logger>("cddp-train", std::make_shared<spdlog::sinks::null_sink_mt>());
}

std::string error_text(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

std::string resolve_device(const TrainConfig& cfg, spdlog::logger* log) {
  const bool cuda = at::hasCUDA();
  if (cfg.run.device == "cuda" && !cuda)
    throw ConfigError(cfg.source + ": error: run.device = \"cuda\", but this process sees no usable GPU (LibTorch " + torch_version() +
                      " was built without CUDA, or no CUDA device is visible); use \"cpu\" or \"auto\"");
  if (cfg.run.device == "auto") {
    if (log) log->info("device \"auto\": {}", cuda ? "CUDA is available, using cuda" : "no CUDA device, using cpu");
    return cuda ? "cuda" : "cpu";
  }
  return cfg.run.device;
}

const char* env_value(const EnvMap& env, const char* key) {
  auto it = env.find(key);
  return it == env.end() ? nullptr : it->second.c_str();
}

}  // namespace cddp::train
