// cli/main.cpp — the cddp-train command line: `train`, `eval` and `plugins` subcommands,
// exit codes, logging setup and the SIGINT/SIGTERM flag.
//
//   cddp-train train --config FILE [--set section.key=value ...] [--nproc-per-node N]
//   cddp-train eval --checkpoint PATH [--config FILE] [--set ...]
//   cddp-train plugins [--verbose] [--plugin-dir DIR ...] [--config FILE]
//
// Exit codes: 0 done, 2 bad usage or bad config, 3 runtime failure, 130 interrupted.
// This is the only place that reads the process environment (it hands it down), installs
// signal handlers or decides the exit code. It will not train, parse TOML or load plugins
// itself: trainer.h does all of that.
#include "trainer.h"

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace cddp::train;

// Set by the signal handler, read by the training loop between steps. Repeated SIGINTs end
// the process at once: the second one for a user's process, the third one for a worker
// (which may get the terminal's SIGINT and its launcher's forwarded copy).
std::atomic<int> g_stop{0};
std::atomic<int> g_signals{0};
std::atomic<int> g_hard_exit_at{2};

extern "C" void on_stop_signal(int sig) {
  g_stop.store(sig);
  if (sig == SIGINT && g_signals.fetch_add(1) + 1 >= g_hard_exit_at.load()) _exit(kExitInterrupted);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

std::string version_text() {
  return std::string("cddp-train ") + CDDP_VERSION_STRING + " (LibTorch " + std::to_string(TORCH_VERSION_MAJOR) +
         "." + std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH) +
#ifdef CDDP_WITH_CUDA
         ", CUDA build)";
#else
         ", CPU-only build)";
#endif
}

int env_rank(const EnvMap& env) {
  for (const char* k : {"RANK", "SLURM_PROCID"}) {
    auto it = env.find(k);
    if (it != env.end()) return std::atoi(it->second.c_str());
  }
  return 0;
}

// Rank 0 logs at the configured level; other ranks only warnings and errors, unless the
// configured level is debug or trace.
// `rank_tag`: say the rank in each line (not needed under our launcher, which prefixes it).
std::shared_ptr<spdlog::logger> make_logger(const std::string& level_name, int rank, bool rank_tag) {
  auto log = std::make_shared<spdlog::logger>("cddp-train", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  log->set_pattern(rank_tag ? "[%H:%M:%S.%e] [rank " + std::to_string(rank) + "] [%^%l%$] %v"
                            : "[%H:%M:%S.%e] [%^%l%$] %v");
  auto level = spdlog::level::from_str(level_name);
  if (rank > 0 && level > spdlog::level::debug && level < spdlog::level::warn) level = spdlog::level::warn;
  log->set_level(level);
  log->flush_on(spdlog::level::info);
  return log;
}

void print_config_error(const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  std::fprintf(stderr, "cddp-train: invalid configuration (see docs/config.md)\n");
}

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, unit[u]);
  return buf;
}

void save_config_copy(const TrainConfig& cfg, const std::shared_ptr<spdlog::logger>& log) {
  fs::create_directories(cfg.run.output_dir);
  const fs::path path = fs::path(cfg.run.output_dir) / "config.toml";
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << render_config(cfg);
    if (!out) throw RuntimeFailure("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
  log->info("effective config saved to {}", path.string());
}

int run_train(const std::string& config_path, std::vector<std::string> sets, int nproc, bool dry_run,
              RunContext ctx) {
  if (nproc > 0) sets.push_back("distributed.nproc_per_node=" + std::to_string(nproc));
  TrainConfig cfg;
  try {
    cfg = load_train_config(config_path, sets);
  } catch (const ConfigError& e) {
    print_config_error(e);
    return kExitUsage;
  }
  const bool worker = is_distributed_worker(ctx.env);
  const int rank = env_rank(ctx.env);
  const bool launched_by_us = ctx.env.count("CDDP_LAUNCHED_BY") != 0;
  if (worker) g_hard_exit_at.store(3);
  ctx.log = make_logger(cfg.run.log_level, rank, worker && !launched_by_us);
  try {
    preflight(cfg, ctx);
  } catch (const ConfigError& e) {
    print_config_error(e);
    return kExitUsage;
  }
  // The launcher's parent (or a single process, or rank 0 of a torchrun/Slurm job) shows
  // and saves the effective config.
  if (!worker || (rank == 0 && !launched_by_us)) {
    std::cout << render_config(cfg) << std::flush;
    save_config_copy(cfg, ctx.log);
  }
  if (dry_run) return kExitOk;
  if (!worker && cfg.distributed.nproc_per_node > 1) return launch_workers(cfg, ctx);

  TrainResult r = run_training(cfg, ctx);
  if (r.rank == 0) {
    std::printf("\n%s after %lld steps (%lld epoch%s, %.1f s, world size %d)\n",
                r.interrupted ? "interrupted" : "finished", (long long)r.steps, (long long)r.epochs,
                r.epochs == 1 ? "" : "s", r.wall_s, r.world_size);
    if (r.evaluated) std::printf("test accuracy %.2f%%  test loss %.4f\n", 100.0 * r.test_accuracy, r.test_loss);
    else std::printf("test accuracy: not evaluated\n");
    const double ratio = r.bytes_sent > 0 ? double(r.bytes_dense_equivalent) / double(r.bytes_sent) : 0.0;
    std::printf("bytes sent (rank 0): %s vs %s dense (%.1fx fewer); received %s\n",
                human_bytes(double(r.bytes_sent)).c_str(), human_bytes(double(r.bytes_dense_equivalent)).c_str(),
                ratio, human_bytes(double(r.bytes_received)).c_str());
    std::printf("metrics: %s\n", r.metrics_dir.c_str());
    for (const auto& f : r.metrics_files) std::printf("  %s\n", f.c_str());
    if (!r.last_checkpoint.empty()) std::printf("checkpoint: %s\n", r.last_checkpoint.c_str());
    std::fflush(stdout);
  }
  return r.interrupted ? kExitInterrupted : kExitOk;
}

int run_eval(const std::string& checkpoint, const std::string& config_path, const std::vector<std::string>& sets,
             RunContext ctx) {
  std::optional<TrainConfig> cfg;
  if (!config_path.empty()) {
    try {
      cfg = load_train_config(config_path, sets);
    } catch (const ConfigError& e) {
      print_config_error(e);
      return kExitUsage;
    }
  } else if (!sets.empty()) {
    std::fprintf(stderr, "cddp-train eval: --set needs --config (the checkpoint's own config is used as saved)\n");
    return kExitUsage;
  }
  if (!fs::exists(checkpoint)) {
    std::fprintf(stderr, "cddp-train eval: no such checkpoint: %s\n", checkpoint.c_str());
    return kExitUsage;
  }
  ctx.log = make_logger(cfg ? cfg->run.log_level : "info", 0, false);
  EvalResult r = evaluate_checkpoint(checkpoint, cfg, ctx);
  std::printf("checkpoint %s (model %s, step %lld, epoch %lld)\n", checkpoint.c_str(), r.model.c_str(),
              (long long)r.step, (long long)r.epoch);
  std::printf("test loss %.4f  test accuracy %.2f%%  (%lld samples)\n", r.loss, 100.0 * r.accuracy,
              (long long)r.samples);
  return kExitOk;
}

int run_plugins(bool verbose, std::vector<std::string> dirs, const std::string& config_path,
                const RunContext& ctx) {
  if (!config_path.empty()) {
    try {
      TrainConfig cfg = load_train_config(config_path, {});
      dirs.insert(dirs.end(), cfg.compression.plugin_dirs.begin(), cfg.compression.plugin_dirs.end());
    } catch (const ConfigError& e) {
      print_config_error(e);
      return kExitUsage;
    }
  }
  std::cout << describe_plugins(dirs, ctx, verbose) << std::flush;
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cddp-train — data-parallel training with compressed gradients (LibTorch)", "cddp-train"};
  app.set_version_flag("--version", version_text());
  app.require_subcommand(1);
  app.fallthrough(false);

  std::string config_path, checkpoint;
  std::vector<std::string> sets, plugin_dirs;
  int nproc = 0;
  bool dry_run = false, verbose = false;

  auto* train = app.add_subcommand("train", "train a model as a TOML config describes");
  train->set_version_flag("--version", version_text());
  train->add_option("-c,--config", config_path, "TOML config file (see docs/config.md)")->required();
  train->add_option("--set", sets, "override one config key: section.key=value (repeatable)")
      ->expected(1)
      ->take_all();
  train->add_option("--nproc-per-node", nproc, "launch N local worker processes (overrides distributed.nproc_per_node)")
      ->check(CLI::Range(1, 1024));
  train->add_flag("--dry-run", dry_run, "validate, print and save the effective config, then stop");

  auto* eval = app.add_subcommand("eval", "evaluate a checkpoint on the test set");
  eval->set_version_flag("--version", version_text());
  eval->add_option("--checkpoint", checkpoint, "a checkpoint file (one rank's ckpt-step*-rank*.pt)")->required();
  eval->add_option("-c,--config", config_path, "use this config instead of the one saved in the checkpoint");
  eval->add_option("--set", sets, "override one config key of --config: section.key=value")->expected(1)->take_all();

  auto* plugins = app.add_subcommand("plugins", "list compressor plugins found, and refused ones with the reason");
  plugins->set_version_flag("--version", version_text());
  plugins->add_flag("-v,--verbose", verbose, "show versions, LibTorch versions, devices and parameter schemas");
  plugins->add_option("--plugin-dir", plugin_dirs, "also search this directory (repeatable)")->expected(1)->take_all();
  plugins->add_option("-c,--config", config_path, "also search the config's compression.plugin_dirs");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  RunContext ctx;
  ctx.env = env_from(environ);
  ctx.stop = &g_stop;
  ctx.argv.assign(argv, argv + argc);
  install_signal_handlers();

  try {
    if (*train) return run_train(config_path, sets, nproc, dry_run, ctx);
    if (*eval) return run_eval(checkpoint, config_path, sets, ctx);
    if (*plugins) return run_plugins(verbose, plugin_dirs, config_path, ctx);
  } catch (const ConfigError& e) {
    print_config_error(e);
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cddp-train: error: %s\n", e.what());
    return g_stop.load() != 0 ? kExitInterrupted : kExitRuntime;
  }
  return kExitUsage;
}
