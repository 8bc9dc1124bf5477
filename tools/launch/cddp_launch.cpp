// cddp_launch.cpp — `cddp-launch --nproc N [options] -- program args...`: runs N local
// workers with torchrun's environment variables and rank-prefixed output (see launcher.h).
//
// It only parses the command line and converts `environ`; it will not interpret the
// workers' arguments. Exit status: the job's (launch_local's), 2 on a bad command line.
#include <cddp/launcher.h>
#include <cddp/rendezvous.h>

#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>
#include <string>

extern char** environ;

namespace {

const char* kUsage =
    "usage: cddp-launch --nproc N [--master-port P] [--grace S] [--timeout S] [--verbose] [--] program [args...]\n"
    "  --nproc, --nproc-per-node N   workers to start (ranks 0..N-1), 1..4096\n"
    "  --master-port P               rendezvous port on 127.0.0.1 (default: a free one)\n"
    "  --grace S                     seconds between SIGTERM and SIGKILL when stopping workers (default 5)\n"
    "  --timeout S                   stop the whole job after S seconds (default: none)\n"
    "  --verbose                     report the port, pids and every exit\n"
    "Each worker gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.\n"
    "Every output line is prefixed with \"[rank N] \". If a worker fails, the others are stopped\n"
    "and the exit status is that worker's (128+signal if it was killed).\n";

bool parse_number(const std::string& text, double lo, double hi, double& out) {
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return !text.empty() && end && *end == '\0' && out >= lo && out <= hi;
}

int usage_error(const std::string& msg) {
  std::cerr << "cddp-launch: " << msg << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  cddp::LaunchOptions o;
  o.nproc = 0;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& name) -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    double v = 0;
    if (a == "--") {
      ++i;
      break;
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--nproc" || a == "--nproc-per-node") {
      const char* s = value(a);
      if (!s || !parse_number(s, 1, 4096, v) || v != static_cast<int>(v))
        return usage_error(a + " needs a whole number in [1, 4096]" + (s ? std::string(", got '") + s + "'" : ""));
      o.nproc = static_cast<int>(v);
    } else if (a == "--master-port") {
      const char* s = value(a);
      if (!s || !parse_number(s, 1, 65535, v) || v != static_cast<int>(v))
        return usage_error("--master-port needs a port in [1, 65535]" + (s ? std::string(", got '") + s + "'" : ""));
      o.master_port = static_cast<int>(v);
    } else if (a == "--grace" || a == "--timeout") {
      const char* s = value(a);
      if (!s || !parse_number(s, 0, 1e7, v))
        return usage_error(a + " needs a number of seconds" + (s ? std::string(", got '") + s + "'" : ""));
      (a == "--grace" ? o.grace : o.timeout) = std::chrono::milliseconds(static_cast<int64_t>(v * 1000));
    } else if (a == "--verbose") {
      o.verbose = true;
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option '" + a + "'");
    } else {
      break;  // the program
    }
  }
  if (o.nproc == 0) return usage_error("--nproc is required");
  if (i >= argc) return usage_error("no program to run");
  o.argv.assign(argv + i, argv + argc);
  o.env = cddp::environment_map(environ);
  try {
    return cddp::launch_local(o);
  } catch (const c10::Error& e) {
    std::cerr << "cddp-launch: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "cddp-launch: " << e.what() << "\n";
  }
  return 1;
}
