// trainer.h — cddp-train's training loop and the steps around it, as a library: checking a
// config against the machine (plugins, device), running one rank's training (single
// process or one worker of a distributed run), evaluating a checkpoint, launching local
// workers and listing plugins.
//
// Free of LibTorch types so that the command line compiles fast. It will not parse
// arguments, install signal handlers, call exit() or read the environment: main passes the
// environment in (RunContext::env) and owns the process.
#pragma once

#include "config/config_loader.h"
#include "config/train_config.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace spdlog {
class logger;
}

namespace cddp::train {

// Process exit codes of cddp-train.
enum ExitCode : int { kExitOk = 0, kExitUsage = 2, kExitRuntime = 3, kExitInterrupted = 130 };

// A failure of the run rather than of its configuration (missing dataset, dead rank,
// refused checkpoint...): exit code 3.
class RuntimeFailure : public std::runtime_error {
 public:
  explicit RuntimeFailure(const std::string& what) : std::runtime_error(what) {}
};

using EnvMap = std::map<std::string, std::string>;
EnvMap env_from(char** envp);

struct RunContext {
  EnvMap env;                              // the process environment, from main
  const std::atomic<int>* stop = nullptr;  // non-zero: stop after this step (SIGINT/SIGTERM)
  std::vector<std::string> argv;           // the command line, for re-launching workers
  std::shared_ptr<spdlog::logger> log;     // where log lines go; null: nowhere
};

// Models and datasets known to this build, for the config loader's checks.
ConfigChoices config_choices();

// Parses --set-style overrides and the file: ConfigError on anything wrong.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides);

// What a file cannot tell: the plugins exist and accept their parameters, the device
// exists. Throws ConfigError (exit 2).
void preflight(const TrainConfig& config, const RunContext& ctx);

// True when the environment says this process is one rank of a distributed job
// (torchrun/launcher or Slurm variables).
bool is_distributed_worker(const EnvMap& env);
// Local world size: nproc_per_node from the environment of a worker, else the config's.
int64_t local_world_size(const TrainConfig& config, const EnvMap& env);

// Re-runs this program ctx.argv as `nproc` local workers with torchrun variables, and
// returns the exit code to use (the first failure's code, 130 when interrupted).
int launch_workers(const TrainConfig& config, const RunContext& ctx);

struct TrainResult {
  int64_t steps = 0;
  int64_t epochs = 0;
  bool interrupted = false;
  bool evaluated = false;  // test_loss/test_accuracy hold the last evaluation
  double test_loss = 0, test_accuracy = 0;
  int64_t bytes_sent = 0, bytes_received = 0, bytes_dense_equivalent = 0;
  double wall_s = 0;
  int rank = 0, world_size = 1;
  std::string output_dir, metrics_dir, last_checkpoint;
  std::vector<std::string> metrics_files;
};

// Trains (or resumes) as described; throws ConfigError, RuntimeFailure. On an interrupt it
// stops between steps, writes a final checkpoint and returns with interrupted = true.
TrainResult run_training(const TrainConfig& config, const RunContext& ctx);

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
  int64_t step = 0, epoch = 0;
  std::string model;
};

// Loads a rank's checkpoint (its embedded config unless `config` is given) and evaluates
// the model on the test set in this process.
EvalResult evaluate_checkpoint(const std::string& path, const std::optional<TrainConfig>& config,
                               const RunContext& ctx);

// `cddp-train plugins`: every plugin found, usable or refused with the reason.
std::string describe_plugins(const std::vector<std::string>& extra_dirs, const RunContext& ctx, bool verbose);

}  // namespace cddp::train
