// launcher.h — starts N local worker processes the way `torchrun --standalone` does.
//
// launch_local() picks a free port on 127.0.0.1 (or uses the one given), fork/execs
// `argv` N times with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
// MASTER_PORT set, reads every worker's stdout and stderr through pipes and prefixes each
// line with "[rank N] ", forwards SIGINT/SIGTERM to the workers, and when a worker exits
// non-zero or dies by a signal stops the others (SIGTERM, then SIGKILL after `grace`). It
// reaps every worker and kills whatever a worker left behind in its process group; workers
// also die (PR_SET_PDEATHSIG) if the launcher itself dies.
//
// It is a library function: it never calls exit(), it returns an exit code and a report.
// Bad options throw c10::Error. Process-wide state it touches, only for the duration of the
// call: the SIGINT/SIGTERM/SIGCHLD dispositions (restored on return; disable with
// forward_signals = false). Only one launch_local may run at a time in a process. It will not
// restart workers, run across several machines, or read the environment itself: pass the
// workers' base environment in `env` (e.g. environment_map(environ) from rendezvous.h).
// Note: PR_SET_PDEATHSIG fires when the *thread* that called launch_local exits.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cddp {

struct LaunchOptions {
  int nproc = 1;                     // workers to start, ranks 0 .. nproc-1
  std::vector<std::string> argv;     // run by every worker; argv[0] is searched in PATH
  std::map<std::string, std::string> env;        // the workers' base environment
  std::map<std::string, std::string> extra_env;  // applied last: may override the rank variables
  std::string master_addr = "127.0.0.1";
  int master_port = 0;               // 0: pick a free port
  std::chrono::milliseconds grace{std::chrono::seconds(5)};  // SIGTERM → SIGKILL
  std::chrono::milliseconds timeout{0};  // whole job (0: none); past it every worker is stopped → 124
  bool terminate_on_failure = true;  // false: let the others find out by themselves (tests)
  bool forward_signals = true;       // SIGINT/SIGTERM to the launcher go to every worker
  // Every worker line, without its newline; stream is 1 (stdout) or 2 (stderr). Null: the
  // line goes to the launcher's own stdout/stderr as "[rank N] line".
  std::function<void(int rank, int stream, const std::string& line)> on_line;
  // The launcher's own messages. Null: written to stderr as "cddp-launch: message".
  std::function<void(const std::string& message)> on_event;
  bool verbose = false;              // also report the start (port, pids) and each exit
};

struct WorkerExit {
  int rank = -1;
  int pid = -1;
  bool exited = false;        // exited normally with `code`
  int code = 0;
  int signal = 0;             // killed by this signal
  bool stopped_by_launcher = false;  // the launcher sent it SIGTERM/SIGKILL (after another failure)
  std::string start_error;    // could not be started (exec failed)
  double seconds = 0;         // when it was reaped, in seconds since launch_local started
  std::string describe() const;  // "rank 1 exited with code 3", "rank 0 killed by signal 9 (Killed)"
};

struct LaunchReport {
  int exit_code = 0;
  int master_port = 0;
  int first_failed_rank = -1;   // the rank whose failure stopped the job, -1 if none
  std::string summary;          // one line: "all 4 ranks exited with code 0" / "rank 1 exited with code 3"
  std::vector<WorkerExit> workers;
  double seconds = 0;
};

// Returns 0 when every worker exited 0; else the failing worker's exit code, 128+signal when
// it died by a signal (or the launcher was interrupted), 124 on `timeout`, 127 when a worker
// could not be started. The reason is in report->summary and goes to on_event.
int launch_local(const LaunchOptions& options, LaunchReport* report = nullptr);

// A TCP port that was free on `addr` a moment ago (bind port 0, read it back, close).
int pick_free_port(const std::string& addr = "127.0.0.1");

}  // namespace cddp
