// rendezvous.h — where this process sits in a job (rank, world size, master address), read
// from an explicit map of environment variables, and connect(): the Communicator for it.
//
// Sources, first match wins:
//   torchrun / cddp-launch: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
//                           MASTER_PORT (LOCAL_* default to RANK / WORLD_SIZE; MASTER_* may
//                           be absent only when WORLD_SIZE is 1)
//   Slurm (srun):           SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE
//                           or SLURM_TASKS_PER_NODE with SLURM_NODEID, and MASTER_ADDR or the
//                           first host of SLURM_JOB_NODELIST ("node[01-04],gpu7" → "node01");
//                           MASTER_PORT or 29500
//   neither:                a single process (rank 0 of 1)
// Optional for every source: GLOO_SOCKET_IFNAME (the interface Gloo binds to).
//
// It will not read the environment itself: callers convert `environ` with environment_map()
// in main() and pass the map down. Bad or missing values throw c10::Error naming the variable.
#pragma once

#include <cddp/communicator.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>

namespace cddp {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "default";  // "torchrun", "slurm" or "default"
  std::string gloo_interface;      // GLOO_SOCKET_IFNAME, empty when unset

  std::string describe() const;  // "rank 1/4 (local 1/4) master 127.0.0.1:29500 from torchrun"
};

using EnvMap = std::map<std::string, std::string>;

// `environ` (or main's envp) as a map. The only function here that looks at the environment,
// and only at what it is handed.
EnvMap environment_map(char** envp);

// Parses and validates the job's layout. Throws c10::Error naming the bad variable.
DistEnv parse_dist_env(const EnvMap& env);

// The first host of a Slurm nodelist: "node[01-04],gpu7" → "node01", "a,b" → "a",
// "rack[1-2]-n[07,09]" → "rack1-n07". Throws c10::Error on a malformed list.
std::string first_slurm_host(const std::string& nodelist);

// World size 1: a LocalCommunicator (no store, no sockets). Otherwise a C10dCommunicator
// after a TCPStore rendezvous bounded by `timeout` (a port in use, a missing rank or an
// unreachable master throw c10::Error saying address:port, time waited and ranks joined).
// `stop`, when given, is polled while waiting (see C10dOptions::stop): a signal handler's flag
// ends a rank that waits for its peers within about a second. cuda_over_gloo:
// C10dOptions::cuda_over_gloo (CUDA tensors through Gloo, not NCCL).
std::shared_ptr<Communicator> connect(const DistEnv& env,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(60),
                                      const std::atomic<int>* stop = nullptr, bool cuda_over_gloo = false);

}  // namespace cddp
