// c10d_communicator.h — the multi-process Communicator, over LibTorch's c10d.
//
// One C10dCommunicator per process. Constructing it performs the rendezvous: rank 0 hosts a
// TCPStore on master_port, every rank connects, announces itself and waits until all
// world_size ranks have joined; then a Gloo process group (CPU tensors) is set up over that
// store. When cddp is compiled with USE_C10D_NCCL, the first collective on a CUDA tensor
// creates an NCCL process group over the same store (every rank must then pass CUDA tensors
// in the same call, as with any collective). With cuda_over_gloo, CUDA tensors go through Gloo
// instead, staged through host memory: what several ranks sharing one GPU need, since NCCL
// refuses two ranks on one device.
//
// Failures never hang: the store, the rendezvous and every collective are bounded by
// `timeout`. A failed collective throws c10::Error naming the rank(s) that did not answer
// when that can be known: every rank bumps a heartbeat counter in the store, and on failure
// the counters tell a dead or stopped rank from a live one. After one failure the
// communicator is broken and every later call throws at once.
//
// It will not parse environment variables (see rendezvous.h), spawn processes (launcher.h),
// or decide what to send (GradientExchange). No global state: two instances on different
// ports are independent.
#pragma once

#include <cddp/communicator.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

namespace cddp {

struct C10dOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";  // where rank 0's store listens (all ranks connect)
  int master_port = 29500;
  // Bounds the rendezvous, the store, Gloo's setup and every collective. At least 1 s.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // Gloo's device: a network interface name (GLOO_SOCKET_IFNAME) wins over a hostname or
  // address of this machine to bind to. Both empty: 127.0.0.1 when master_addr is a loopback
  // address (single node), else this machine's hostname.
  std::string gloo_interface;
  std::string gloo_hostname;
  // How often each rank bumps its heartbeat counter (at most timeout/4); a rank whose counter
  // stands still for three intervals is reported as not responding.
  std::chrono::milliseconds heartbeat_interval{500};
  // Optional: polled while the rendezvous waits (for the store, for the other ranks). Once it
  // reads non-zero (a SIGINT/SIGTERM handler's flag, holding the signal number) the wait ends
  // within about 0.1–1 s with a c10::Error saying so, instead of running out the timeout.
  const std::atomic<int>* stop = nullptr;
  // CUDA tensors: false — NCCL (needs USE_C10D_NCCL and one GPU per rank); true — copied to
  // the host, reduced / gathered / broadcast over Gloo, copied back (slower, any layout).
  bool cuda_over_gloo = false;
};

class C10dCommunicator final : public Communicator {
 public:
  // Rendezvous + Gloo setup. Throws c10::Error (address:port, time waited, ranks joined) on
  // a port in use, an unreachable store, a rendezvous that does not complete in time, or a
  // stop request (C10dOptions::stop) while waiting.
  explicit C10dCommunicator(const C10dOptions& options);
  ~C10dCommunicator() override;
  C10dCommunicator(const C10dCommunicator&) = delete;
  C10dCommunicator& operator=(const C10dCommunicator&) = delete;

  int rank() const override;
  int world_size() const override;
  std::string backend_name() const override;  // "gloo", "gloo+nccl" once NCCL is up, or
                                               // "gloo (cuda staged)" with cuda_over_gloo

  void allreduce_sum_(at::Tensor& tensor) override;
  std::vector<at::Tensor> allgather(const at::Tensor& tensor) override;
  void allgather_into(const at::Tensor& tensor, std::vector<at::Tensor>& out) override;
  // c10d's alltoall_base: each rank receives only what is sent to it.
  at::Tensor alltoall(const at::Tensor& input, const std::vector<int64_t>& send_counts,
                      const std::vector<int64_t>& recv_counts) override;
  void broadcast_(at::Tensor& tensor, int root) override;
  void barrier() override;

  const C10dOptions& options() const;
  // True after a collective failed; every later call throws.
  bool broken() const;
  // Which version of the c10d API this build uses, for logs.
  static std::string torch_api();
  // True when this build can move CUDA tensors (compiled with USE_C10D_NCCL).
  static bool nccl_available();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cddp
