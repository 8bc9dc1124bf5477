// trainer.cpp — cddp-train's library entry points (trainer.h) that are one line each:
// the environment, the config choices and loading, the preflight check and the run. The
// work is in run/: training_run (the loop), compression_setup, optimizer_setup,
// lr_schedule, density_schedule, evaluation (and `eval`), record_sink, plugin_listing
// (`plugins`), worker_launch (`--nproc-per-node`).
//
// It will not parse TOML (config/), read or write checkpoint bytes (checkpoint/), install
// signal handlers or exit: errors leave as ConfigError (2) or RuntimeFailure (3).
#include "trainer.h"

#include "run/compression_setup.h"
#include "run/run_support.h"
#include "run/training_run.h"

#include <cddp/data/dataset_loader.h>
#include <cddp/rendezvous.h>
#include <cddp/models/model_factory.h>

namespace cddp::train {

EnvMap env_from(char** envp) { return environment_map(envp); }

ConfigChoices config_choices() { return {model_names(), dataset_names()}; }

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load_config_file(path, overrides, config_choices());
}

void preflight(const TrainConfig& cfg, const RunContext& ctx) {
  const std::string device = resolve_device(cfg, nullptr);
  build_compression(cfg, ctx.env, device);
}

TrainResult run_training(const TrainConfig& cfg, const RunContext& ctx) {
  TrainingRun run(cfg, ctx);
  return run.go();
}

}  // namespace cddp::train
