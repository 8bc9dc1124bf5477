// worker_launch.cpp — whether this process is one rank of a distributed job, the local
// world size, and `--nproc-per-node N` (launch_workers, declared in trainer.h): re-running
// this program as N local workers with torchrun's variables through cddp::launch_local.
//
// It will not install signal handlers (main does) or read the process environment: the
// EnvMap of the RunContext is the environment.
#include "run/run_support.h"
#include "trainer.h"

#include <cddp/launcher.h>
#include <cddp/rendezvous.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <filesystem>

namespace cddp::train {

bool is_distributed_worker(const EnvMap& env) {
  // torchrun/our launcher set WORLD_SIZE; srun sets SLURM_PROCID for each task (an salloc
  // shell alone does not, so `--nproc-per-node` still launches there).
  return env.count("WORLD_SIZE") || env.count("SLURM_PROCID");
}

int64_t local_world_size(const TrainConfig& cfg, const EnvMap& env) {
  if (is_distributed_worker(env)) {
    try {
      return parse_dist_env(env).local_world_size;
    } catch (const std::exception&) {
      // A malformed environment is reported by the run itself (connect); here the
      // config's count is the best answer.
    }
  }
  return cfg.distributed.nproc_per_node;
}

int launch_workers(const TrainConfig& cfg, const RunContext& ctx) {
  auto log = logger_of(ctx);
  LaunchOptions o;
  o.nproc = int(cfg.distributed.nproc_per_node);
  o.argv = ctx.argv;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec && !o.argv.empty()) o.argv[0] = self.string();
  o.env = ctx.env;
  o.extra_env["CDDP_LAUNCHED_BY"] = "cddp-train";
  o.grace = std::chrono::milliseconds(int64_t(std::max(5.0, cfg.distributed.timeout_s) * 1000));
  o.on_event = [log](const std::string& m) { log->info("launcher: {}", m); };
  log->info("launching {} local workers", o.nproc);
  LaunchReport report;
  int rc;
  try {
    rc = launch_local(o, &report);
  } catch (const std::exception& e) {
    throw RuntimeFailure("cannot launch workers: " + error_text(e));
  }
  if (rc == 0) return kExitOk;
  log->error("workers failed: {}", report.summary);
  if (rc == kExitInterrupted || rc == 128 + SIGINT || rc == 128 + SIGTERM) return kExitInterrupted;
  if (rc == kExitUsage) return kExitUsage;
  return kExitRuntime;
}

}  // namespace cddp::train
