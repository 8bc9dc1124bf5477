// dist_launcher_test.cpp — cddp::launch_local and the cddp-launch binary: environment per
// rank, "[rank N] " prefixes, exit codes and reasons, stopping the others on a failure,
// SIGTERM→SIGKILL escalation, SIGINT forwarding, the job timeout, and no processes left.
// It will not test communication (the other dist tests do).
#include "dist_launch.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

namespace cddp::disttest {
namespace {

bool process_gone(int pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto close = all.rfind(')');
  return close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z';  // a zombie of init
}

TEST(Launcher, EnvironmentAndLinesPerRank) {
  JobRun run = run_workers(3, {"echo", "--lines", "2", "--partial"});
  ASSERT_EQ(run.code, 0) << run.all();
  EXPECT_EQ(run.report.summary, "all 3 ranks exited with code 0");
  const std::string port = std::to_string(run.report.master_port);
  EXPECT_GT(run.report.master_port, 0);
  for (int r = 0; r < 3; ++r) {
    const std::string R = std::to_string(r);
    EXPECT_NE(run.text(r).find("ENV RANK=" + R + " WORLD_SIZE=3 LOCAL_RANK=" + R +
                               " LOCAL_WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port),
              std::string::npos)
        << run.all();
    int out = 0, err = 0;
    for (const auto& l : run.lines)
      if (l.rank == r) {
        out += l.stream == 1 && l.text.rfind("out line", 0) == 0;
        err += l.stream == 2 && l.text.rfind("err line", 0) == 0;
      }
    EXPECT_EQ(out, 2);
    EXPECT_EQ(err, 2);
    EXPECT_EQ(run.count(r, "no newline at the end"), 1) << "a last line without newline is kept\n" << run.all();
    EXPECT_TRUE(run.report.workers[r].exited && run.report.workers[r].code == 0);
  }
}

TEST(Launcher, FailingRankStopsTheOthers) {
  JobRun run = run_workers(3, {"echo", "--exit-rank", "1", "--code", "3", "--sleep", "60"});
  EXPECT_EQ(run.code, 3) << run.all();
  EXPECT_EQ(run.report.summary, "rank 1 exited with code 3");
  EXPECT_EQ(run.report.first_failed_rank, 1);
  EXPECT_LT(run.report.seconds, 20) << "the sleeping ranks must be stopped, not waited for\n" << run.all();
  for (int r : {0, 2}) {
    EXPECT_EQ(run.report.workers[r].signal, SIGTERM) << run.all();
    EXPECT_TRUE(run.report.workers[r].stopped_by_launcher);
  }
  EXPECT_NE(run.all().find("launcher: rank 1 exited with code 3"), std::string::npos) << run.all();
}

TEST(Launcher, KilledRankIsReported) {
  JobRun run = run_workers(2, {"echo", "--signal-rank", "0", "--signal", "9", "--sleep", "60"});
  EXPECT_EQ(run.code, 128 + 9) << run.all();
  EXPECT_EQ(run.report.summary, "rank 0 killed by signal 9 (Killed)");
  EXPECT_EQ(run.report.workers[1].signal, SIGTERM);
}

TEST(Launcher, EscalatesToSigkillAfterGrace) {
  char dir_template[] = "/tmp/cddp-ready-XXXXXX";  // rank 0 fails only once rank 1 ignores SIGTERM
  const std::string ready_dir = ::mkdtemp(dir_template);
  JobRun run = run_workers(2, {"echo", "--exit-rank", "0", "--code", "5", "--ignore-term", "--sleep", "60",
                               "--ready-dir", ready_dir},
                        [](LaunchOptions& o) { o.grace = std::chrono::milliseconds(1000); });
  std::filesystem::remove_all(ready_dir);
  EXPECT_EQ(run.code, 5) << run.all();
  EXPECT_EQ(run.report.workers[1].signal, SIGKILL) << run.all();
  EXPECT_LT(run.report.seconds, 15) << run.all();
}

TEST(Launcher, ForwardsSigint) {
  int ready = 0;
  JobRun run = run_workers(2, {"echo", "--sleep", "60"}, [&](LaunchOptions& o) {
    auto sink = o.on_line;
    o.on_line = [&, sink](int rank, int stream, const std::string& text) {
      sink(rank, stream, text);
      if (text == "READY" && ++ready == 2) ::kill(::getpid(), SIGINT);  // as if ^C hit the launcher
    };
  });
  EXPECT_EQ(run.code, 128 + SIGINT) << run.all();
  EXPECT_EQ(run.report.summary, "interrupted by signal 2 (Interrupt)");
  for (int r = 0; r < 2; ++r) EXPECT_EQ(run.report.workers[r].signal, SIGINT) << run.all();
  EXPECT_LT(run.report.seconds, 20);
}

TEST(Launcher, JobTimeout) {
  JobRun run = run_workers(2, {"echo", "--sleep", "60"}, [](LaunchOptions& o) { o.timeout = std::chrono::seconds(1); });
  EXPECT_EQ(run.code, 124) << run.all();
  EXPECT_EQ(run.report.summary, "timed out after 1 s");
  EXPECT_LT(run.report.seconds, 10);
}

TEST(Launcher, ProgramThatCannotStart) {
  LaunchOptions o;
  o.nproc = 2;
  o.argv = {"/nonexistent/program"};
  std::vector<std::string> events;
  o.on_event = [&](const std::string& m) { events.push_back(m); };
  LaunchReport report;
  EXPECT_EQ(launch_local(o, &report), 127);
  EXPECT_EQ(report.summary, "rank 0 could not start '/nonexistent/program': No such file or directory");
}

TEST(Launcher, NoProcessLeftBehind) {
  char dir_template[] = "/tmp/cddp-ready-XXXXXX";  // rank 1 fails only once both ranks forked
  const std::string ready_dir = ::mkdtemp(dir_template);
  JobRun run = run_workers(2, {"echo", "--grandchild", "--exit-rank", "1", "--code", "2", "--sleep", "60",
                               "--ready-dir", ready_dir});
  std::filesystem::remove_all(ready_dir);
  EXPECT_EQ(run.code, 2) << run.all();
  std::vector<int> pids;
  std::regex re("GRANDCHILD (\\d+)");
  for (const auto& l : run.lines) {
    std::smatch m;
    if (std::regex_search(l.text, m, re)) pids.push_back(std::stoi(m[1]));
  }
  ASSERT_EQ(pids.size(), 2u) << run.all();
  for (int r = 0; r < 2; ++r) pids.push_back(run.report.workers[r].pid);
  ::usleep(200 * 1000);
  for (int pid : pids) EXPECT_TRUE(process_gone(pid)) << "pid " << pid << " survived the launcher";
}

TEST(Launcher, BadOptionsThrow) {
  LaunchOptions o;
  o.argv = {"true"};
  o.nproc = 0;
  EXPECT_THROW(launch_local(o), c10::Error);
  o.nproc = 1;
  o.argv.clear();
  EXPECT_THROW(launch_local(o), c10::Error);
}

// The binary: prefixes on the real stdout/stderr and the exit status.
TEST(LaunchBinary, PrefixesAndExitStatus) {
  char dir_template[] = "/tmp/cddp-ready-XXXXXX";  // rank 1 fails only once rank 0 has printed
  const std::string ready_dir = ::mkdtemp(dir_template);
  const std::string cmd = std::string(CDDP_LAUNCH_BIN) + " --nproc 2 -- " + CDDP_DIST_WORKER +
                          " echo --lines 1 --exit-rank 1 --code 7 --sleep 30 --ready-dir " + ready_dir + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  std::filesystem::remove_all(ready_dir);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 7) << out;
  EXPECT_NE(out.find("[rank 0] out line 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[rank 1] err line 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[rank 1] ENV RANK=1 WORLD_SIZE=2"), std::string::npos) << out;
  EXPECT_NE(out.find("cddp-launch: rank 1 exited with code 7"), std::string::npos) << out;

  FILE* bad = ::popen((std::string(CDDP_LAUNCH_BIN) + " --nproc zero -- true 2>&1").c_str(), "r");
  out.clear();
  while ((n = std::fread(buf, 1, sizeof buf, bad)) > 0) out.append(buf, n);
  const int bad_status = ::pclose(bad);
  EXPECT_EQ(WEXITSTATUS(bad_status), 2) << out;
  EXPECT_NE(out.find("--nproc needs a whole number"), std::string::npos) << out;
}

}  // namespace
}  // namespace cddp::disttest
