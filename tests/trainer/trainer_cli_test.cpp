// trainer_cli_test.cpp — `cddp-train` as a user meets it: --version/--help on every
// subcommand, exit codes for bad usage (2), a missing dataset (3), an interrupt (130, with a
// final checkpoint, single process and under the launcher), a dead rank (3 on the survivor
// within the timeout); --dry-run printing and saving the effective config; `eval` of a
// checkpoint; `plugins` listing topk/randomk with their schemas and a refused library.
#include "config/config_loader.h"
#include "train_test_util.h"

#include <gtest/gtest.h>
#include <torch/version.h>

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>

#include <chrono>
#include <map>
#include <regex>
#include <thread>

extern char** environ;

namespace {

using namespace cddp_test;
using Clock = std::chrono::steady_clock;

const std::string kSmoke = std::string(CDDP_TEST_SOURCE_DIR) + "/configs/synthetic_smoke.toml";

std::string exe() { return shell_quote(train_exe()); }

// A background `sh -c "exec <command> >log 2>&1"` with extra environment variables.
struct Background {
  pid_t pid = -1;
  fs::path log;

  Background(const std::string& command, const fs::path& log_file, const std::vector<std::string>& extra_env = {})
      : log(log_file) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string script = "exec " + command + " >" + shell_quote(log.string()) + " 2>&1";
    std::vector<char*> argv = {const_cast<char*>("sh"), const_cast<char*>("-c"), script.data(), nullptr};
    if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv.data(), envp.data()) != 0) pid = -1;
  }
  ~Background() {
    if (pid > 0 && !reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  // Waits until the log contains `text`; false after `seconds`.
  bool wait_for(const std::string& text, double seconds) const {
    auto t0 = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
      if (read_file(log).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // The exit code (128 + signal when killed); -1 when still running after `seconds`.
  int wait_exit(double seconds) {
    auto t0 = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
      int status = 0;
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        reaped = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  bool reaped = false;
};

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// True once process `pid` catches SIGINT and SIGTERM (its /proc status, SigCgt); false after
// `seconds`.
bool catches_stop_signals(pid_t pid, double seconds) {
  const auto t0 = Clock::now();
  const unsigned long long want = (1ull << (SIGINT - 1)) | (1ull << (SIGTERM - 1));
  while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
    const std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
    const auto at = status.find("SigCgt:");
    if (at != std::string::npos && (std::stoull(status.substr(at + 7), nullptr, 16) & want) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::vector<fs::path> checkpoints_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("ckpt-step", 0) == 0 && e.path().extension() == ".pt") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Cli, VersionAndHelpOnEverySubcommand) {
  for (const std::string sub : {"", " train", " eval", " plugins"}) {
    auto v = run_command(exe() + sub + " --version");
    EXPECT_EQ(v.exit_code, 0) << sub << "\n" << v.output;
    EXPECT_NE(v.output.find("cddp-train 0.1.0 (LibTorch"), std::string::npos) << v.output;
    auto h = run_command(exe() + sub + " --help");
    EXPECT_EQ(h.exit_code, 0) << sub << "\n" << h.output;
    EXPECT_NE(h.output.find("--help"), std::string::npos) << h.output;
  }
  EXPECT_NE(run_command(exe() + " train --help").output.find("--nproc-per-node"), std::string::npos);
  EXPECT_NE(run_command(exe() + " eval --help").output.find("--checkpoint"), std::string::npos);
  EXPECT_NE(run_command(exe() + " plugins --help").output.find("--verbose"), std::string::npos);
}

TEST(Cli, BadUsageExitsWith2) {
  EXPECT_EQ(run_command(exe()).exit_code, 2);
  EXPECT_EQ(run_command(exe() + " frobnicate").exit_code, 2);
  EXPECT_EQ(run_command(exe() + " train").exit_code, 2);
  EXPECT_EQ(run_command(exe() + " train --config " + kSmoke + " --nproc-per-node 0").exit_code, 2);
  EXPECT_EQ(run_command(exe() + " train --config " + kSmoke + " --no-such-flag").exit_code, 2);
  auto r = run_command(exe() + " train --config /nonexistent/x.toml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("/nonexistent/x.toml: error: cannot open the config file"), std::string::npos) << r.output;
  EXPECT_EQ(run_command(exe() + " eval").exit_code, 2);
  EXPECT_EQ(run_command(exe() + " eval --checkpoint /nonexistent/ckpt.pt").exit_code, 2);
}

TEST(Cli, DryRunPrintsAndSavesTheEffectiveConfig) {
  const fs::path dir = scratch_dir("dryrun");
  auto r = run_command(exe() + " train --config " + kSmoke + " --dry-run --set run.output_dir=" +
                       shell_quote(dir.string()) + " --set optimizer.lr=0.125");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("# effective configuration"), std::string::npos);
  EXPECT_NE(r.output.find("lr = 0.125"), std::string::npos);
  EXPECT_NE(r.output.find("[compression.params]"), std::string::npos);
  ASSERT_TRUE(fs::exists(dir / "config.toml"));
  auto cfg = cddp::train::load_config_file((dir / "config.toml").string());
  EXPECT_DOUBLE_EQ(cfg.optimizer.lr, 0.125);
  EXPECT_EQ(cfg.run.output_dir, dir.string());
  EXPECT_FALSE(fs::exists(dir / "checkpoints"));
  fs::remove_all(dir);
}

TEST(Cli, PluginsListsSchemasAndRefusedLibraries) {
  const fs::path dir = scratch_dir("plugins");
  write_file(dir / "cddp_bogus.so", "this is not a shared library\n");
  auto r = run_command(exe() + " plugins --verbose --plugin-dir " + shell_quote(dir.string()));
  const std::string kTorchMajor = "LibTorch " + std::to_string(TORCH_VERSION_MAJOR) + ".";  // what it was built with
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* s : {"topk", "randomk", "ratio (float, default 0.01, range [", "scale (bool, default false",
                        "devices: cpu", kTorchMajor.c_str(), "REFUSED", "cddp_bogus.so", "reason: "})
    EXPECT_NE(r.output.find(s), std::string::npos) << "missing '" << s << "' in\n" << r.output;
  auto plain = run_command(exe() + " plugins");
  EXPECT_EQ(plain.exit_code, 0);
  EXPECT_NE(plain.output.find("topk"), std::string::npos);
  EXPECT_EQ(plain.output.find("parameters:"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Cli, EvalOfACheckpoint) {
  const fs::path dir = scratch_dir("eval");
  auto r = run_command(exe() + " train --config " + kSmoke + " --set run.output_dir=" + shell_quote(dir.string()) +
                       " --set run.max_steps=30");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ckpts = checkpoints_in(dir / "checkpoints");
  ASSERT_FALSE(ckpts.empty());
  const fs::path last = ckpts.back();
  auto e = run_command(exe() + " eval --checkpoint " + shell_quote(last.string()));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("step 30"), std::string::npos) << e.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(e.output, m, std::regex("test accuracy ([0-9.]+)%"))) << e.output;
  EXPECT_GT(std::stod(m[1]), 30.0);
  // With a config of another model: refused.
  auto other = run_command(exe() + " eval --checkpoint " + shell_quote(last.string()) + " --config " + kSmoke +
                           " --set model.hidden=[16]");
  EXPECT_EQ(other.exit_code, 3) << other.output;
  EXPECT_NE(other.output.find("different model"), std::string::npos) << other.output;
  // A damaged file: refused.
  const std::string good = read_file(last);
  write_file(last, good.substr(0, good.size() / 3));
  auto bad = run_command(exe() + " eval --checkpoint " + shell_quote(last.string()));
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  EXPECT_NE(bad.output.find("truncated checkpoint"), std::string::npos) << bad.output;
  fs::remove_all(dir);
}

TEST(Cli, MissingDatasetExitsWith3) {
  const fs::path dir = scratch_dir("nodata");
  auto r = run_command(exe() + " train --config " + kSmoke + " --set run.output_dir=" + shell_quote(dir.string()) +
                       " --set data.name=fashion_mnist --set data.path=/nonexistent/fashion");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/fashion"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Cli, InterruptWritesAFinalCheckpointAndExits130) {
  const fs::path dir = scratch_dir("sigint");
  const std::string cmd = exe() + " train --config " + kSmoke + " --set run.output_dir=" + shell_quote(dir.string()) +
                          " --set run.epochs=100000 --set checkpoint.every_epoch=false --set checkpoint.every_steps=0" +
                          " --set checkpoint.resume=auto";
  Background bg(cmd, dir / "log.txt");
  ASSERT_GT(bg.pid, 0);
  ASSERT_TRUE(bg.wait_for("routing:", 60)) << read_file(dir / "log.txt");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(bg.pid, SIGINT);
  EXPECT_EQ(bg.wait_exit(60), 130) << read_file(dir / "log.txt");
  const std::string log = read_file(dir / "log.txt");
  EXPECT_NE(log.find("checkpoint (interrupted)"), std::string::npos) << log;
  EXPECT_NE(log.find("interrupted after"), std::string::npos) << log;
  const auto ckpts = checkpoints_in(dir / "checkpoints");
  ASSERT_EQ(ckpts.size(), 1u);
  // It resumes from there.
  std::smatch m;
  const std::string name = ckpts[0].filename().string();
  ASSERT_TRUE(std::regex_search(name, m, std::regex("step0*([0-9]+)-")));
  const int step = std::stoi(m[1]);
  auto r = run_command(cmd + " --set run.max_steps=" + std::to_string(step + 3));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("finished after " + std::to_string(step + 3) + " steps"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Cli, InterruptUnderTheLauncherStopsEveryRankAtTheSameStep) {
  const fs::path dir = scratch_dir("sigint2");
  const std::string cmd = exe() + " train --config " + kSmoke + " --nproc-per-node 2 --set run.output_dir=" +
                          shell_quote(dir.string()) +
                          " --set run.epochs=100000 --set checkpoint.every_epoch=false --set checkpoint.every_steps=0" +
                          " --set run.threads=1";
  Background bg(cmd, dir / "log.txt");
  ASSERT_GT(bg.pid, 0);
  ASSERT_TRUE(bg.wait_for("routing:", 90)) << read_file(dir / "log.txt");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ::kill(bg.pid, SIGINT);
  EXPECT_EQ(bg.wait_exit(60), 130) << read_file(dir / "log.txt");
  const auto ckpts = checkpoints_in(dir / "checkpoints");
  ASSERT_EQ(ckpts.size(), 2u) << read_file(dir / "log.txt");
  EXPECT_NE(ckpts[0].filename().string().find("-rank0.pt"), std::string::npos);
  EXPECT_NE(ckpts[1].filename().string().find("-rank1.pt"), std::string::npos);
  EXPECT_EQ(ckpts[0].filename().string().substr(0, 18), ckpts[1].filename().string().substr(0, 18));
  fs::remove_all(dir);
}

// A rank waiting in the rendezvous (here rank 1 of 2, and no rank 0 will ever come) ends within
// about a second of a SIGTERM or SIGINT with exit 130, not when the 60 s timeout runs out.
TEST(Cli, SignalEndsARankWaitingInTheRendezvousWithin2s) {
  for (int sig : {SIGTERM, SIGINT}) {
    const fs::path dir = scratch_dir("rendezvous_signal");
    const std::string cmd = exe() + " train --config " + kSmoke + " --set run.output_dir=" +
                            shell_quote(dir.string()) + " --set distributed.timeout_s=60";
    const std::vector<std::string> env = {"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                                          "MASTER_PORT=" + std::to_string(free_port())};
    Background bg(cmd, dir / "log.txt", env);
    ASSERT_GT(bg.pid, 0);
    // Rank 1 logs only warnings; wait until its handlers are installed (it then catches both).
    ASSERT_TRUE(catches_stop_signals(bg.pid, 60)) << read_file(dir / "log.txt");
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    ::kill(bg.pid, sig);
    const auto t0 = Clock::now();
    const int code = bg.wait_exit(30);
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    const std::string log = read_file(dir / "log.txt");
    EXPECT_EQ(code, 130) << log;
    EXPECT_LT(waited, 2.0) << log;
    EXPECT_NE(log.find("stopped by signal " + std::to_string(sig)), std::string::npos) << log;
    fs::remove_all(dir);
  }
}

// Every in-tree plugin trains on its defaults alone: the smoke config with only the plugin's
// name changed, at 2 ranks (the config's `ratio` goes only to plugins whose schema has one).
TEST(Cli, EveryInTreePluginTrainsOnItsDefaultsAtTwoRanks) {
  const std::map<std::string, std::string> route = {
      {"topk", "sparse-allgather"}, {"randomk", "shared-indices-allreduce"}, {"threshold", "sparse-allgather"},
      {"qsgd", "gather-allgather"}, {"terngrad", "gather-allgather"},      {"natural", "gather-allgather"},
      {"sign", "gather-allgather"}, {"cast", "sum-allreduce"},         {"powersgd", "rounds-allreduce"}};
  for (const auto& [plugin, expected] : route) {
    const fs::path dir = scratch_dir("plugin_" + plugin);
    auto r = run_command(exe() + " train --config " + kSmoke + " --nproc-per-node 2 --set compression.plugin=" +
                         plugin + " --set run.max_steps=20 --set run.threads=1 --set checkpoint.enabled=false" +
                         " --set run.output_dir=" + shell_quote(dir.string()));
    EXPECT_EQ(r.exit_code, 0) << plugin << "\n" << r.output;
    EXPECT_NE(r.output.find("finished after 20 steps"), std::string::npos) << plugin << "\n" << r.output;
    EXPECT_NE(r.output.find("fc1.weight -> " + expected), std::string::npos) << plugin << "\n" << r.output;
    fs::remove_all(dir);
  }
}

TEST(Cli, DeadRankMakesTheOtherExit3WithinTheTimeout) {
  const fs::path dir = scratch_dir("deadrank");
  const int port = free_port();
  const double timeout_s = 10;
  const std::string cmd = exe() + " train --config " + kSmoke + " --set run.output_dir=" + shell_quote(dir.string()) +
                          " --set run.epochs=100000 --set run.threads=1 --set checkpoint.enabled=false" +
                          " --set distributed.timeout_s=" + std::to_string(timeout_s);
  auto env = [&](int rank) {
    return std::vector<std::string>{"RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(rank),
                                    "WORLD_SIZE=2", "LOCAL_WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                                    "MASTER_PORT=" + std::to_string(port)};
  };
  Background r0(cmd, dir / "rank0.txt", env(0));
  Background r1(cmd, dir / "rank1.txt", env(1));
  ASSERT_TRUE(r0.wait_for("routing:", 90)) << read_file(dir / "rank0.txt") << read_file(dir / "rank1.txt");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(r1.pid, SIGKILL);
  const auto t0 = Clock::now();
  const int code = r0.wait_exit(timeout_s + 30);
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(code, 3) << read_file(dir / "rank0.txt");
  EXPECT_LT(waited, timeout_s + 15) << read_file(dir / "rank0.txt");
  EXPECT_NE(read_file(dir / "rank0.txt").find("cddp-train: error: "), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
