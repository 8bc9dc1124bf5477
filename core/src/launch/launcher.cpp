// launcher.cpp — launch_local(): fork/exec, pipes + poll, rank-prefixed lines, signal
// forwarding, failure propagation and reaping.
//
// It will not exit(), restart workers or leave children behind. Its one piece of process-wide
// state is the self-pipe a signal handler writes to while launch_local runs (signal handlers
// cannot reach anything else); it is set up and torn down by each call.
#include <cddp/launcher.h>

#include <c10/util/Exception.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace cddp {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_launch_active{false};
std::atomic<int> g_signal_pipe{-1};  // write end; the handler only write()s to it

extern "C" void launcher_signal_handler(int sig) {
  int saved = errno;
  int fd = g_signal_pipe.load();
  if (fd >= 0) {
    unsigned char b = static_cast<unsigned char>(sig);
    ssize_t ignored = ::write(fd, &b, 1);
    (void)ignored;
  }
  errno = saved;
}

void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // our stdout is gone: nothing better to do with the line
    p += n;
    left -= static_cast<size_t>(n);
  }
}

std::string fmt_s(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", ms.count() / 1000.0);
  return buf;
}

std::string signal_text(int sig) {
  std::string s = "signal " + std::to_string(sig);
  const char* name = ::strsignal(sig);
  if (name) s += std::string(" (") + name + ")";
  return s;
}

// Restores what it changed, however launch_local leaves.
class SignalScope {
 public:
  explicit SignalScope(bool forward) : forward_(forward) {
    bool expected = false;
    TORCH_CHECK(g_launch_active.compare_exchange_strong(expected, true),
                "launch_local: another launch_local is already running in this process");
    if (::pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
      g_launch_active = false;
      TORCH_CHECK(false, "launch_local: pipe2 failed: ", std::strerror(errno));
    }
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(SIGCHLD, &dfl, &old_chld_);  // SIG_IGN would auto-reap and hide exit codes
    if (forward_) {
      g_signal_pipe = pipe_[1];
      struct sigaction sa {};
      sa.sa_handler = launcher_signal_handler;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      ::sigaction(SIGINT, &sa, &old_int_);
      ::sigaction(SIGTERM, &sa, &old_term_);
    }
  }
  ~SignalScope() {
    if (forward_) {
      ::sigaction(SIGINT, &old_int_, nullptr);
      ::sigaction(SIGTERM, &old_term_, nullptr);
      g_signal_pipe = -1;
    }
    ::sigaction(SIGCHLD, &old_chld_, nullptr);
    ::close(pipe_[0]);
    ::close(pipe_[1]);
    g_launch_active = false;
  }
  int read_fd() const { return pipe_[0]; }

 private:
  bool forward_;
  int pipe_[2] = {-1, -1};
  struct sigaction old_int_ {}, old_term_ {}, old_chld_ {};
};

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  int fd[3] = {-1, -1, -1};  // [1] stdout, [2] stderr read ends
  std::string partial[3];
  bool running = false;
  WorkerExit exit;
};

struct Launch {
  const LaunchOptions& o;
  Clock::time_point t0;
  std::vector<Worker> workers;
  std::string summary;
  int exit_code = 0;
  int first_failed = -1;
  bool stopping = false;
  Clock::time_point kill_at{};

  void event(const std::string& msg) const {
    if (o.on_event) o.on_event(msg);
    else write_all(2, "cddp-launch: " + msg + "\n");
  }
  void line(int rank, int stream, const std::string& text) const {
    if (o.on_line) o.on_line(rank, stream, text);
    else write_all(stream, "[rank " + std::to_string(rank) + "] " + text + "\n");
  }

  void signal_all(int sig) {
    for (auto& w : workers)
      if (w.running) {
        ::kill(-w.pid, sig);  // its process group: the worker and anything it started
        ::kill(w.pid, sig);   // in case it left the group
      }
  }
  // Stop every running worker: `sig` now, SIGKILL after the grace period.
  void stop_all(int sig) {
    if (!stopping) {
      stopping = true;
      kill_at = Clock::now() + o.grace;
      for (auto& w : workers)
        if (w.running) w.exit.stopped_by_launcher = true;
    }
    signal_all(sig);
  }

  void record_failure(int rank, const std::string& why, int code) {
    if (first_failed >= 0 || exit_code != 0) return;
    first_failed = rank;
    summary = why;
    exit_code = code;
  }

  void drain(Worker& w, int stream, bool eof) {
    char buf[65536];
    while (w.fd[stream] >= 0) {
      ssize_t n = ::read(w.fd[stream], buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!eof) return;
        n = 0;
      }
      if (n <= 0) {
        if (!w.partial[stream].empty()) line(w.rank, stream, w.partial[stream]);
        w.partial[stream].clear();
        ::close(w.fd[stream]);
        w.fd[stream] = -1;
        return;
      }
      std::string& p = w.partial[stream];
      p.append(buf, static_cast<size_t>(n));
      size_t start = 0, nl;
      while ((nl = p.find('\n', start)) != std::string::npos) {
        line(w.rank, stream, p.substr(start, nl - start));
        start = nl + 1;
      }
      p.erase(0, start);
      if (p.size() > (1 << 20)) {  // a megabyte without a newline: pass it on anyway
        line(w.rank, stream, p);
        p.clear();
      }
    }
  }

  void on_exit(Worker& w, int status) {
    w.running = false;
    w.exit.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (WIFEXITED(status)) {
      w.exit.exited = true;
      w.exit.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      w.exit.signal = WTERMSIG(status);
    }
    ::kill(-w.pid, SIGKILL);  // leftovers in its process group (ESRCH when none)
    if (!w.exit.start_error.empty()) return;  // reported when it failed to start
    const bool failed = !w.exit.start_error.empty() || !w.exit.exited || w.exit.code != 0;
    if (o.verbose || (failed && !w.exit.stopped_by_launcher)) event(w.exit.describe());
    if (!failed || w.exit.stopped_by_launcher) return;
    int code = !w.exit.start_error.empty() ? 127 : w.exit.exited ? w.exit.code : 128 + w.exit.signal;
    record_failure(w.rank, w.exit.describe(), code);
    if (o.terminate_on_failure && !stopping) {
      bool others = false;
      for (auto& x : workers) others = others || x.running;
      if (others) event("stopping the other ranks (SIGTERM, SIGKILL after " + fmt_s(o.grace) + " s)");
      stop_all(SIGTERM);
    }
  }
};

pid_t spawn(const LaunchOptions& o, int rank, int port, Worker& w, std::string& error) {
  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  std::map<std::string, std::string> env = o.env;
  env["RANK"] = std::to_string(rank);
  env["WORLD_SIZE"] = std::to_string(o.nproc);
  env["LOCAL_RANK"] = std::to_string(rank);
  env["LOCAL_WORLD_SIZE"] = std::to_string(o.nproc);
  env["MASTER_ADDR"] = o.master_addr;
  env["MASTER_PORT"] = std::to_string(port);
  for (const auto& [k, v] : o.extra_env) env[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = o.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  int out[2], err[2], status[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return error = std::strerror(errno), -1;
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]), ::close(out[1]);
    return error = std::strerror(errno), -1;
  }
  if (::pipe2(status, O_CLOEXEC) != 0) {
    ::close(out[0]), ::close(out[1]), ::close(err[0]), ::close(err[1]);
    return error = std::strerror(errno), -1;
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl took effect
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(SIGINT, &dfl, nullptr);
    ::sigaction(SIGTERM, &dfl, nullptr);
    ::sigaction(SIGPIPE, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execvpe(argv[0], argv.data(), envp.data());
    int e = errno;
    ssize_t ignored = ::write(status[1], &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  int fork_errno = errno;
  ::close(out[1]);
  ::close(err[1]);
  ::close(status[1]);
  if (pid < 0) {
    ::close(out[0]), ::close(err[0]), ::close(status[0]);
    return error = std::string("fork failed: ") + std::strerror(fork_errno), -1;
  }
  ::setpgid(pid, pid);  // also in the parent, so kill(-pid) works at once (EACCES after exec is fine)
  int e = 0;
  ssize_t n;
  do n = ::read(status[0], &e, sizeof e);
  while (n < 0 && errno == EINTR);
  ::close(status[0]);
  if (n == static_cast<ssize_t>(sizeof e))
    error = "could not start '" + o.argv[0] + "': " + std::strerror(e);
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  ::fcntl(err[0], F_SETFL, O_NONBLOCK);
  w.fd[1] = out[0];
  w.fd[2] = err[0];
  return pid;
}

}  // namespace

std::string WorkerExit::describe() const {
  std::string r = "rank " + std::to_string(rank);
  if (!start_error.empty()) return r + " " + start_error;
  if (exited) return r + " exited with code " + std::to_string(code);
  if (signal) return r + " killed by " + signal_text(signal);
  if (pid <= 0) return r + " was not started";
  return r + " did not finish";
}

int pick_free_port(const std::string& addr) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  TORCH_CHECK(fd >= 0, "pick_free_port: socket failed: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  if (::inet_pton(AF_INET, addr.c_str(), &a.sin_addr) != 1) a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    ::close(fd);
    TORCH_CHECK(false, "pick_free_port: cannot bind a port on ", addr, ": ", std::strerror(e));
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Longer than 80 lines on purpose: starting the workers, the poll loop over their output
// pipes, signal forwarding and the stop-everyone-on-first-failure rule act on one set of
// live processes; kept in one function so that no path can leave a worker unreaped.
int launch_local(const LaunchOptions& o, LaunchReport* report) {
  TORCH_CHECK(o.nproc >= 1 && o.nproc <= 4096, "launch_local: nproc must be in [1, 4096], got ", o.nproc);
  TORCH_CHECK(!o.argv.empty() && !o.argv[0].empty(), "launch_local: no program to run (argv is empty)");
  TORCH_CHECK(o.master_port >= 0 && o.master_port < 65536, "launch_local: master_port ", o.master_port,
              " is not a TCP port");
  TORCH_CHECK(o.grace.count() >= 0 && o.timeout.count() >= 0, "launch_local: grace and timeout must be >= 0");
  const auto t0 = Clock::now();
  const int port = o.master_port ? o.master_port : pick_free_port(o.master_addr);

  SignalScope signals(o.forward_signals);
  Launch L{o, t0};
  L.workers.resize(o.nproc);
  for (int r = 0; r < o.nproc; ++r) L.workers[r].rank = L.workers[r].exit.rank = r;
  for (int r = 0; r < o.nproc; ++r) {
    Worker& w = L.workers[r];
    std::string error;
    w.pid = spawn(o, r, port, w, error);
    w.exit.pid = w.pid;
    w.running = w.pid > 0;
    if (!error.empty()) {
      // fork or exec failed: the other ranks would fail the same way, so start no more, and
      // stop those already started. An exec'd-and-failed child exits 127 and is reaped below.
      w.exit.start_error = error;
      L.event(w.exit.describe());
      L.record_failure(r, w.exit.describe(), 127);
      L.stop_all(SIGTERM);
      break;
    }
  }
  if (o.verbose) {
    std::ostringstream os;
    os << "started " << o.nproc << " worker(s) with MASTER_ADDR=" << o.master_addr << " MASTER_PORT=" << port
       << ", pids";
    for (auto& w : L.workers) os << " " << w.pid;
    L.event(os.str());
  }

  int interrupted = 0;
  Clock::time_point last_running = Clock::now();
  while (true) {
    bool any_running = false, any_open = false;
    std::vector<pollfd> fds;
    std::vector<std::pair<int, int>> owner;  // (worker, stream) per pollfd after the first
    fds.push_back({signals.read_fd(), POLLIN, 0});
    for (int i = 0; i < o.nproc; ++i) {
      Worker& w = L.workers[i];
      any_running = any_running || w.running;
      for (int s = 1; s <= 2; ++s)
        if (w.fd[s] >= 0) {
          any_open = true;
          fds.push_back({w.fd[s], POLLIN, 0});
          owner.push_back({i, s});
        }
    }
    if (!any_running && !any_open) break;
    int n = ::poll(fds.data(), fds.size(), 50);
    if (n < 0 && errno != EINTR) break;
    for (size_t j = 1; n > 0 && j < fds.size(); ++j)
      if (fds[j].revents) {
        auto [i, s] = owner[j - 1];
        L.drain(L.workers[i], s, (fds[j].revents & (POLLHUP | POLLERR)) != 0 && !(fds[j].revents & POLLIN));
      }
    if (n > 0 && fds[0].revents) {
      unsigned char sig;
      while (::read(signals.read_fd(), &sig, 1) == 1) {
        if (interrupted) {  // a second signal: no more patience
          L.event("second " + signal_text(sig) + ": killing every worker");
          L.signal_all(SIGKILL);
        } else {
          interrupted = sig;
          L.event("got " + signal_text(sig) + ": forwarding it to every worker");
          if (L.exit_code == 0) {
            L.summary = "interrupted by " + signal_text(sig);
            L.exit_code = 128 + sig;
          }
          L.stop_all(sig);
        }
      }
    }
    for (auto& w : L.workers) {
      if (!w.running) continue;
      int status = 0;
      pid_t r = ::waitpid(w.pid, &status, WNOHANG);
      if (r == w.pid) L.on_exit(w, status);
      else if (r < 0 && errno == ECHILD) L.on_exit(w, 0);  // reaped by someone else
    }
    const auto now = Clock::now();
    if (o.timeout.count() > 0 && !L.stopping && now - t0 > o.timeout) {
      L.event("timeout: the job ran longer than " + fmt_s(o.timeout) + " s; stopping every worker");
      if (L.exit_code == 0) {
        L.summary = "timed out after " + fmt_s(o.timeout) + " s";
        L.exit_code = 124;
      }
      L.stop_all(SIGTERM);
    }
    if (L.stopping && now >= L.kill_at) {
      bool any = false;
      for (auto& w : L.workers) any = any || w.running;
      if (any) {
        L.event("grace period over: sending SIGKILL");
        L.signal_all(SIGKILL);
        L.kill_at = now + std::chrono::hours(24);
      }
    }
    // Every worker is reaped but a pipe is still open (a grandchild escaped its process
    // group and holds it): give it two seconds to flush, not forever.
    if (any_running) {
      last_running = now;
    } else if (now - last_running > std::chrono::seconds(2)) {
      break;
    }
  }
  for (auto& w : L.workers)
    for (int s = 1; s <= 2; ++s)
      if (w.fd[s] >= 0) L.drain(w, s, true);

  if (L.exit_code == 0) L.summary = "all " + std::to_string(o.nproc) + " ranks exited with code 0";
  else if (L.first_failed < 0 && L.summary.empty()) L.summary = "failed";
  if (L.exit_code > 255) L.exit_code = 255;
  if (L.exit_code != 0) L.event("job failed: " + L.summary);
  if (report) {
    report->exit_code = L.exit_code;
    report->master_port = port;
    report->first_failed_rank = L.first_failed;
    report->summary = L.summary;
    report->workers.clear();
    for (auto& w : L.workers) report->workers.push_back(w.exit);
    report->seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return L.exit_code;
}

}  // namespace cddp
