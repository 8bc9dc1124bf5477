// dist_worker.cpp — the process the dist tests launch (through cddp::launch_local), one per
// rank. `dist_worker ROLE [--key value ...]`; rank and rendezvous come from RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT like any torchrun worker.
//
// Roles:
//   train       CompressedSGD on the dist_common.h MLP for --steps steps, rank-specific data;
//               writes its parameters to --out/params_rank<R>.pt. Fault injection:
//               --nan-rank/--nan-step (a NaN gradient), --die-rank/--die-step/--die-how
//               kill|stop (SIGKILL / SIGSTOP itself), --ratio-rank1 (a different config).
//               --momentum-mode global (default here) or dgc. --exchange allgather|sparse_allreduce|auto
//               and --value-dtype fp32|bf16|fp16 (CompressedSGDOptions::exchange, value_dtype).
//               --min-numel N (smaller tensors
//               dense). --overlap 1: the exchange overlaps backward, in buckets of --bucket-kb
//               KiB (the first of --first-bucket-kb); then the NaN is planted by a tensor hook
//               during backward, and --die-in backward dies inside the backward (a hook on the
//               first layer, whose bucket leaves last) while the other buckets are on the wire.
//   bytes       one step of top-k on a --numel tensor (--index-coding block16|plain); prints
//               "BYTES received=... k=..."; --exchange and --value-dtype as for train.
//   rendezvous  connect, barrier, print "CONNECTED".
//   echo        launcher checks: prints env and lines, exits/raises/sleeps as told.
// Errors: "ERROR: <message>" on stderr and exit code 1.
//
// It will not check results: the GoogleTest drivers do.
#include "dist_common.h"

#include <cddp/compressed_sgd.h>
#include <cddp/plugin_loader.h>
#include <cddp/rendezvous.h>
#include <cddp/startup_sync.h>

#include <c10/util/Exception.h>
#include <torch/serialize.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <thread>

extern char** environ;

namespace {

using namespace cddp;
using namespace cddp::disttest;

struct Args {
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& dflt) const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : it->second;
  }
  double num(const std::string& k, double dflt) const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : std::stod(it->second);
  }
  int integer(const std::string& k, int dflt) const { return static_cast<int>(num(k, dflt)); }
};

std::chrono::milliseconds timeout_of(const Args& a) {
  return std::chrono::milliseconds(static_cast<int64_t>(a.num("--timeout", 30) * 1000));
}

// --plugin-dir a:b:c, searched in order.
PluginSearchPath plugin_path(const Args& a) {
  std::vector<std::filesystem::path> dirs;
  std::stringstream ss(a.get("--plugin-dir", ""));
  for (std::string d; std::getline(ss, d, ':');)
    if (!d.empty()) dirs.push_back(d);
  return PluginSearchPath::standard(dirs, nullptr);
}

// --params "k=v,k=v": integers, then numbers, else strings.
ParamMap params_of(const std::string& text) {
  ParamMap out;
  std::stringstream ss(text);
  for (std::string kv; std::getline(ss, kv, ',');) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
    char* end = nullptr;
    const long long i = std::strtoll(v.c_str(), &end, 10);
    if (!v.empty() && *end == '\0') {
      out[k] = int64_t(i);
      continue;
    }
    const double d = std::strtod(v.c_str(), &end);
    if (!v.empty() && *end == '\0') out[k] = d;
    else out[k] = v;
  }
  return out;
}

std::shared_ptr<Communicator> join(const Args& a, DistEnv& env) {
  env = parse_dist_env(environment_map(environ));
  return connect(env, timeout_of(a));
}

int role_train(const Args& a) {
  DistEnv env;
  auto comm = join(a, env);
  const int rank = comm->rank();
  const std::string name = a.get("--compressor", "topk");
  double ratio = a.num("--ratio", 0.01);
  if (rank == 1 && a.kv.count("--ratio-rank1")) ratio = a.num("--ratio-rank1", ratio);
  const int steps = a.integer("--steps", 20);
  const double lr = a.num("--lr", 0.1), momentum = a.num("--momentum", 0.0);
  const std::string momentum_mode = a.get("--momentum-mode", "global");

  std::shared_ptr<Compressor> compressor;
  std::string version = "-";
  PluginLoader loader(plugin_path(a));
  if (name != "none") {
    ParamMap params = params_of(a.get("--params", ""));
    for (const auto& spec : loader.describe(name).params)  // `ratio` only where the schema has it
      if (spec.name == "ratio") params["ratio"] = ratio;
    auto pc = loader.create(name, params);
    version = pc->description().version;
    compressor = pc;
  }

  // Different initial values on every rank on purpose: broadcast_from_rank0 must fix that.
  auto named = make_params(7 + static_cast<uint64_t>(rank));
  std::vector<at::Tensor> params = tensors_of(named);
  broadcast_from_rank0(*comm, params);
  verify_same_config(*comm, {{"compressor", name},
                             {"compressor.params", a.get("--params", "")},
                             {"compressor.version", version},
                             {"compressor.ratio", std::to_string(ratio)},
                             {"lr", std::to_string(lr)},
                             {"momentum", std::to_string(momentum)},
                             {"momentum_mode", momentum_mode},
                             {"exchange", a.get("--exchange", "allgather")},
                             {"value_dtype", a.get("--value-dtype", "fp32")},
                             {"steps", std::to_string(steps)}});

  CompressedSGDOptions o(lr);
  o.momentum(momentum).momentum_mode(momentum_mode).compressor(compressor).communicator(comm).seed(42);
  o.nonfinite(a.get("--nonfinite", "error"));
  o.exchange(a.get("--exchange", "allgather")).value_dtype(a.get("--value-dtype", "fp32"));
  o.min_numel(a.integer("--min-numel", 0));
  const bool overlap = a.integer("--overlap", 0) != 0;
  o.overlap(overlap).bucket_cap_mb(a.num("--bucket-kb", 25600) / 1024).first_bucket_cap_mb(
      a.num("--first-bucket-kb", 1024) / 1024);
  if (compressor) o.density(ratio);
  CompressedSGD opt(named, o);

  const int nan_rank = a.integer("--nan-rank", -1), nan_step = a.integer("--nan-step", -1);
  const int die_rank = a.integer("--die-rank", -1), die_step = a.integer("--die-step", -1);
  const std::string die_how = a.get("--die-how", "kill");
  const bool die_in_backward = a.get("--die-in", "") == "backward";
  const int sleep_ms = a.integer("--sleep-ms", 0);
  int step = 0;
  params[0].register_hook([&](const at::Tensor& g) {
    if (rank == die_rank && step == die_step && die_in_backward) {
      std::printf("DYING at step %d by %s in backward\n", step, die_how.c_str());
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the other buckets are sent
      ::raise(die_how == "stop" ? SIGSTOP : SIGKILL);
    }
    if (overlap && rank == nan_rank && step == nan_step) {
      at::Tensor bad = g.clone();
      bad.view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
      return bad;
    }
    return g;
  });
  for (step = 1; step <= steps; ++step) {
    opt.zero_grad();
    Batch b = make_batch(rank, step);
    loss_of(params, b).backward();
    if (!overlap && rank == nan_rank && step == nan_step) {
      at::NoGradGuard g;
      params[0].grad().view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
    }
    if (rank == die_rank && step == die_step && !die_in_backward) {
      std::printf("DYING at step %d by %s\n", step, die_how.c_str());
      std::fflush(stdout);
      ::raise(die_how == "stop" ? SIGSTOP : SIGKILL);
    }
    opt.step();
    const StepStats& st = opt.last_step_stats();
    std::printf("STEP %d skipped=%d count=%lld received=%lld\n", step, st.skipped ? 1 : 0,
                static_cast<long long>(opt.step_count()), static_cast<long long>(st.bytes_received));
    if (sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
  }
  for (const auto& r : opt.routing()) std::printf("ROUTE %s %s\n", r.name.c_str(), route_name(r.route));
  std::printf("BACKEND %s\n", comm->backend_name().c_str());
  if (!opt.exchange_decision().empty()) std::printf("EXCHANGE %s\n", opt.exchange_decision().c_str());
  const std::string out = a.get("--out", "");
  if (!out.empty()) {
    std::vector<at::Tensor> plain;
    for (auto& p : params) plain.push_back(p.detach().clone());
    torch::save(plain, out + "/params_rank" + std::to_string(rank) + ".pt");
  }
  comm->barrier();  // nobody (rank 0, the store's host) leaves before everyone is done
  std::printf("DONE\n");
  return 0;
}

int role_bytes(const Args& a) {
  DistEnv env;
  auto comm = join(a, env);
  const int64_t numel = static_cast<int64_t>(a.num("--numel", 1e6));
  const double ratio = a.num("--ratio", 0.01);
  PluginLoader loader(PluginSearchPath::standard({a.get("--plugin-dir", "")}, nullptr));
  std::shared_ptr<Compressor> topk = loader.create("topk", {{"ratio", ratio}});
  at::Tensor p = at::zeros({numel});
  p.mutable_grad() = at::randn({numel}, generator(99 + comm->rank()));
  CompressedSGDOptions o(0.1);
  o.compressor(topk).density(ratio).communicator(comm).index_coding(a.get("--index-coding", "block16"));
  o.exchange(a.get("--exchange", "allgather")).value_dtype(a.get("--value-dtype", "fp32"));
  CompressedSGD opt(std::vector<at::Tensor>{p}, o);
  opt.step();
  const StepStats& st = opt.last_step_stats();
  std::printf("BYTES received=%lld sent=%lld payload=%lld k=%lld route=%s\n", static_cast<long long>(st.bytes_received),
              static_cast<long long>(st.bytes_sent), static_cast<long long>(st.payload_bytes),
              static_cast<long long>(st.elements_sent), route_name(opt.routing().at(0).route));
  comm->barrier();
  return 0;
}

int role_rendezvous(const Args& a) {
  DistEnv env;
  auto comm = join(a, env);
  comm->barrier();
  std::printf("CONNECTED %s\n", env.describe().c_str());
  return 0;
}

int role_echo(const Args& a) {
  const EnvMap env = environment_map(environ);
  auto var = [&](const char* k) { return env.count(k) ? env.at(k) : std::string("<unset>"); };
  const int rank = std::atoi(var("RANK").c_str());
  std::printf("ENV RANK=%s WORLD_SIZE=%s LOCAL_RANK=%s LOCAL_WORLD_SIZE=%s MASTER_ADDR=%s MASTER_PORT=%s\n",
              var("RANK").c_str(), var("WORLD_SIZE").c_str(), var("LOCAL_RANK").c_str(),
              var("LOCAL_WORLD_SIZE").c_str(), var("MASTER_ADDR").c_str(), var("MASTER_PORT").c_str());
  const int lines = a.integer("--lines", 2);
  for (int i = 0; i < lines; ++i) {
    std::printf("out line %d\n", i);
    std::fprintf(stderr, "err line %d\n", i);
  }
  if (a.kv.count("--grandchild")) {  // leaves a sleeping child behind; the launcher must reap it
    pid_t child = ::fork();
    if (child == 0) {
      ::execlp("sleep", "sleep", "60", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::printf("GRANDCHILD %d\n", static_cast<int>(child));
  }
  if (a.kv.count("--ignore-term")) ::signal(SIGTERM, SIG_IGN);
  std::printf("READY\n");
  std::fflush(stdout);
  std::fflush(stderr);
  if (a.kv.count("--partial")) {
    std::printf("no newline at the end");
    std::fflush(stdout);
  }
  if (a.kv.count("--ready-dir")) {  // a file barrier: the failing rank waits until every rank is READY
    const std::string dir = a.kv.at("--ready-dir");
    std::FILE* f = std::fopen((dir + "/ready-" + std::to_string(rank)).c_str(), "w");
    if (f) std::fclose(f);
    const int world = std::atoi(var("WORLD_SIZE").c_str());
    for (int waited_ms = 0; rank == a.integer("--exit-rank", -1) && waited_ms < 30000; waited_ms += 20) {
      int ready = 0;
      for (int r = 0; r < world; ++r) ready += ::access((dir + "/ready-" + std::to_string(r)).c_str(), F_OK) == 0;
      if (ready == world) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (rank == a.integer("--exit-rank", -1)) return a.integer("--code", 3);
  if (rank == a.integer("--signal-rank", -1)) ::raise(a.integer("--signal", SIGKILL));
  const double sleep_s = a.num("--sleep", 0);
  if (sleep_s > 0) std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(sleep_s * 1000)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  at::set_num_threads(1);
  if (argc < 2) {
    std::fprintf(stderr, "usage: dist_worker train|bytes|rendezvous|echo [--key value ...]\n");
    return 2;
  }
  const std::string role = argv[1];
  Args a;
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) a.kv[k] = argv[++i];
    else a.kv[k] = "1";
  }
  try {
    if (role == "train") return role_train(a);
    if (role == "bytes") return role_bytes(a);
    if (role == "rendezvous") return role_rendezvous(a);
    if (role == "echo") return role_echo(a);
    std::fprintf(stderr, "ERROR: unknown role '%s'\n", role.c_str());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "ERROR: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ERROR: %s\n", e.what());
  }
  return 1;
}
