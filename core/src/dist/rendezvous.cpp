// rendezvous.cpp — DistEnv from torchrun / Slurm variables, Slurm nodelists, connect().
//
// It will not call getenv: every value comes from the EnvMap the caller passes.
#include <cddp/c10d_communicator.h>
#include <cddp/local_communicator.h>
#include <cddp/rendezvous.h>

#include <c10/util/Exception.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace cddp {
namespace {

const std::string* find(const EnvMap& env, const std::string& key) {
  auto it = env.find(key);
  return it == env.end() ? nullptr : &it->second;
}

// A whole decimal integer in [lo, hi]; anything else names the variable and its value.
int parse_int(const std::string& var, const std::string& value, long lo, long hi) {
  const char* s = value.c_str();
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  const bool whole = !value.empty() && end && *end == '\0' && !std::isspace(static_cast<unsigned char>(value[0]));
  TORCH_CHECK(whole && errno == 0, "environment variable ", var, "='", value, "' is not an integer");
  TORCH_CHECK(v >= lo && v <= hi, "environment variable ", var, "=", v, " is out of range [", lo, ", ", hi, "]");
  return static_cast<int>(v);
}

int required_int(const EnvMap& env, const std::string& var, long lo, long hi, const std::string& why) {
  const std::string* v = find(env, var);
  TORCH_CHECK(v != nullptr, "environment variable ", var, " is not set (", why, ")");
  return parse_int(var, *v, lo, hi);
}

int optional_int(const EnvMap& env, const std::string& var, long lo, long hi, int fallback) {
  const std::string* v = find(env, var);
  return v ? parse_int(var, *v, lo, hi) : fallback;
}

// SLURM_TASKS_PER_NODE: "2(x3),1" — entry for node `node_id` (0-based).
int tasks_on_node(const std::string& spec, int node_id) {
  std::stringstream ss(spec);
  std::string item;
  int node = 0;
  while (std::getline(ss, item, ',')) {
    int count = 0, repeat = 1;
    auto paren = item.find("(x");
    std::string count_text = paren == std::string::npos ? item : item.substr(0, paren);
    count = parse_int("SLURM_TASKS_PER_NODE", count_text, 1, INT_MAX);
    if (paren != std::string::npos) {
      TORCH_CHECK(item.back() == ')', "environment variable SLURM_TASKS_PER_NODE='", spec, "' is malformed");
      repeat = parse_int("SLURM_TASKS_PER_NODE", item.substr(paren + 2, item.size() - paren - 3), 1, INT_MAX);
    }
    if (node_id < node + repeat) return count;
    node += repeat;
  }
  TORCH_CHECK(false, "environment variable SLURM_TASKS_PER_NODE='", spec, "' lists ", node,
              " nodes, but SLURM_NODEID is ", node_id);
}

void validate(DistEnv& d) {
  TORCH_CHECK(d.rank < d.world_size, "rank ", d.rank, " is not below the world size ", d.world_size, " (",
              d.source == "slurm" ? "SLURM_PROCID / SLURM_NTASKS" : "RANK / WORLD_SIZE", ")");
  TORCH_CHECK(d.local_rank < d.local_world_size, "local rank ", d.local_rank, " is not below the local world size ",
              d.local_world_size, " (", d.source == "slurm" ? "SLURM_LOCALID" : "LOCAL_RANK / LOCAL_WORLD_SIZE", ")");
  TORCH_CHECK(d.local_world_size <= d.world_size, "local world size ", d.local_world_size,
              " exceeds the world size ", d.world_size);
  TORCH_CHECK(!d.master_addr.empty(), "MASTER_ADDR is empty");
}

}  // namespace

std::string DistEnv::describe() const {
  std::ostringstream os;
  os << "rank " << rank << "/" << world_size << " (local " << local_rank << "/" << local_world_size << ") master "
     << master_addr << ":" << master_port << " from " << source;
  return os.str();
}

EnvMap environment_map(char** envp) {
  EnvMap m;
  for (char** e = envp; e && *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    m.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return m;
}

std::string first_slurm_host(const std::string& nodelist) {
  TORCH_CHECK(!nodelist.empty(), "SLURM_JOB_NODELIST is empty");
  std::string host;
  size_t i = 0;
  while (i < nodelist.size() && nodelist[i] != ',') {
    char c = nodelist[i];
    if (c == ']') TORCH_CHECK(false, "SLURM_JOB_NODELIST='", nodelist, "' has an unmatched ']'");
    if (c != '[') {
      host += c;
      ++i;
      continue;
    }
    size_t close = nodelist.find(']', i);
    TORCH_CHECK(close != std::string::npos, "SLURM_JOB_NODELIST='", nodelist, "' has an unmatched '['");
    std::string range = nodelist.substr(i + 1, close - i - 1);
    size_t stop = range.find_first_of(",-");
    std::string first = range.substr(0, stop);
    TORCH_CHECK(!first.empty() && first.find_first_not_of("0123456789") == std::string::npos, "SLURM_JOB_NODELIST='",
                nodelist, "' has a malformed range [", range, "]");
    host += first;  // keeps zero padding: node[01-04] → node01
    i = close + 1;
  }
  TORCH_CHECK(!host.empty(), "SLURM_JOB_NODELIST='", nodelist, "' names no host first");
  return host;
}

DistEnv parse_dist_env(const EnvMap& env) {
  DistEnv d;
  if (const std::string* ifname = find(env, "GLOO_SOCKET_IFNAME")) d.gloo_interface = *ifname;
  if (find(env, "RANK") || find(env, "WORLD_SIZE")) {
    d.source = "torchrun";
    const std::string why = "set by torchrun / cddp-launch";
    d.world_size = required_int(env, "WORLD_SIZE", 1, 1 << 20, why);
    d.rank = required_int(env, "RANK", 0, (1 << 20) - 1, why);
    d.local_world_size = optional_int(env, "LOCAL_WORLD_SIZE", 1, 1 << 20, d.world_size);
    d.local_rank = optional_int(env, "LOCAL_RANK", 0, (1 << 20) - 1, d.rank);
    if (d.world_size > 1) {
      const std::string* addr = find(env, "MASTER_ADDR");
      TORCH_CHECK(addr != nullptr, "environment variable MASTER_ADDR is not set (needed when WORLD_SIZE=",
                  d.world_size, ")");
      d.master_addr = *addr;
      d.master_port = required_int(env, "MASTER_PORT", 1, 65535, "needed when WORLD_SIZE > 1");
    } else {
      if (const std::string* addr = find(env, "MASTER_ADDR")) d.master_addr = *addr;
      d.master_port = optional_int(env, "MASTER_PORT", 1, 65535, d.master_port);
    }
  } else if (find(env, "SLURM_PROCID")) {
    d.source = "slurm";
    d.rank = parse_int("SLURM_PROCID", *find(env, "SLURM_PROCID"), 0, (1 << 20) - 1);
    if (find(env, "SLURM_NTASKS"))
      d.world_size = parse_int("SLURM_NTASKS", *find(env, "SLURM_NTASKS"), 1, 1 << 20);
    else
      d.world_size = required_int(env, "SLURM_NPROCS", 1, 1 << 20, "neither SLURM_NTASKS nor SLURM_NPROCS is set");
    d.local_rank = required_int(env, "SLURM_LOCALID", 0, (1 << 20) - 1, "set by srun for every task");
    if (const std::string* per_node = find(env, "SLURM_NTASKS_PER_NODE")) {
      d.local_world_size = parse_int("SLURM_NTASKS_PER_NODE", *per_node, 1, 1 << 20);
    } else if (const std::string* spec = find(env, "SLURM_TASKS_PER_NODE")) {
      d.local_world_size = tasks_on_node(*spec, optional_int(env, "SLURM_NODEID", 0, 1 << 20, 0));
    } else {
      d.local_world_size = d.world_size;
    }
    if (const std::string* addr = find(env, "MASTER_ADDR")) {
      d.master_addr = *addr;
    } else if (const std::string* nodes = find(env, "SLURM_JOB_NODELIST")) {
      d.master_addr = first_slurm_host(*nodes);
    } else if (const std::string* nodes2 = find(env, "SLURM_NODELIST")) {
      d.master_addr = first_slurm_host(*nodes2);
    } else {
      TORCH_CHECK(d.world_size == 1, "neither MASTER_ADDR nor SLURM_JOB_NODELIST is set: cannot tell where rank 0 runs");
    }
    d.master_port = optional_int(env, "MASTER_PORT", 1, 65535, 29500);
  }
  validate(d);
  return d;
}

std::shared_ptr<Communicator> connect(const DistEnv& env, std::chrono::milliseconds timeout,
                                      const std::atomic<int>* stop,
                                      bool cuda_over_gloo) {
  TORCH_CHECK(env.world_size >= 1, "connect: world size must be >= 1, got ", env.world_size);
  if (env.world_size == 1) return std::make_shared<LocalCommunicator>();
  C10dOptions o;
  o.rank = env.rank;
  o.world_size = env.world_size;
  o.master_addr = env.master_addr;
  o.master_port = env.master_port;
  o.timeout = timeout;
  o.gloo_interface = env.gloo_interface;
  o.stop = stop;
  o.cuda_over_gloo = cuda_over_gloo;
  return std::make_shared<C10dCommunicator>(o);
}

}  // namespace cddp
