// dist_launch.h — test helper: runs dist_worker on N local ranks through cddp::launch_local
// and keeps every line each rank printed (with the time it arrived) for the checks.
//
// It will not decide what a test expects.
#pragma once

#include <cddp/launcher.h>
#include <cddp/rendezvous.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

extern char** environ;

namespace cddp::disttest {

struct Line {
  int rank, stream;
  std::string text;
  double at;  // seconds since the launch began
};

struct JobRun {
  int code = -1;
  LaunchReport report;
  std::vector<Line> lines;

  // Every line of `rank` (both streams), joined with newlines.
  std::string text(int rank) const {
    std::string s;
    for (const auto& l : lines)
      if (l.rank == rank) s += l.text + "\n";
    return s;
  }
  std::string all() const {
    std::string s;
    for (const auto& l : lines) s += "[rank " + std::to_string(l.rank) + "] " + l.text + "\n";
    return s + "launcher: " + report.summary + "\n";
  }
  // Arrival time of the first line of `rank` starting with `prefix`, or -1.
  double when(int rank, const std::string& prefix) const {
    for (const auto& l : lines)
      if (l.rank == rank && l.text.rfind(prefix, 0) == 0) return l.at;
    return -1;
  }
  int count(int rank, const std::string& prefix) const {
    int n = 0;
    for (const auto& l : lines) n += (l.rank == rank && l.text.rfind(prefix, 0) == 0) ? 1 : 0;
    return n;
  }
};

// Launches `nproc` copies of dist_worker with `args`; `tune` may adjust the options.
template <class Tune>
JobRun run_workers(int nproc, const std::vector<std::string>& args, Tune&& tune) {
  LaunchOptions o;
  o.nproc = nproc;
  o.argv = {CDDP_DIST_WORKER};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = environment_map(environ);
  o.grace = std::chrono::seconds(3);
  o.timeout = std::chrono::seconds(90);  // a hung test fails instead of hanging ctest
  JobRun run;
  const auto t0 = std::chrono::steady_clock::now();
  o.on_line = [&](int rank, int stream, const std::string& text) {
    run.lines.push_back({rank, stream, text, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
  };
  o.on_event = [&](const std::string& msg) { run.lines.push_back({-1, 2, "launcher: " + msg, 0}); };
  tune(o);
  run.code = launch_local(o, &run.report);
  return run;
}

inline JobRun run_workers(int nproc, const std::vector<std::string>& args) {
  return run_workers(nproc, args, [](LaunchOptions&) {});
}

// A fresh directory under the build tree for one test's files.
inline std::filesystem::path scratch_dir(const std::string& name) {
  std::filesystem::path d = std::filesystem::path(CDDP_TEST_BINARY_DIR) / "tests" / "dist_scratch" / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace cddp::disttest
