// c10d_compat.h — the one file that knows LibTorch 1.13's c10d from 2.x's.
//
// In 1.13 every process group derives from c10d::ProcessGroup; in 2.x the collectives live
// in c10d::Backend subclasses (ProcessGroupGloo, ProcessGroupNCCL derive from Backend) and
// c10d::ProcessGroup became a dispatcher over them. We never need the dispatcher: we talk to
// one Gloo backend (CPU tensors) and, when USE_C10D_NCCL is defined, one NCCL backend (CUDA
// tensors) directly. Everything version-specific is below; the rest of src/dist includes
// this header and uses only cddp::compat names plus the c10d API that both versions share
// (Store, TCPStore, PrefixStore, Work, the *Options structs, the collective signatures).
//
// It will not create threads, read the environment, or decide policy (timeouts, devices):
// callers pass everything in.
#pragma once

#include <torch/version.h>  // TORCH_VERSION_MAJOR, in 1.13 and 2.x alike

// ProcessGroupGloo.hpp is empty unless USE_C10D_GLOO is defined. LibTorch's CMake config does
// not define it for consumers, so we do when Gloo's headers are installed (Debian's
// libtorch-dev and the pip wheels ship them).
#if !defined(USE_C10D_GLOO) && defined(__has_include)
#if __has_include(<gloo/context.h>)
#define USE_C10D_GLOO 1
#endif
#endif
#ifndef USE_C10D_GLOO
#error "cddp needs LibTorch built with Gloo (USE_C10D_GLOO) and the gloo headers installed"
#endif

// USE_C10D_NCCL (from LibTorch's CUDA targets, or from core/CMakeLists.txt when it finds
// nccl.h) pulls in ProcessGroupNCCL.hpp, which includes <nccl.h>: without that header, build
// without NCCL (CUDA tensors then get a clear error) rather than fail to compile.
#if defined(USE_C10D_NCCL) && defined(__has_include)
#if !__has_include(<nccl.h>)
#pragma message("cddp: USE_C10D_NCCL is defined but nccl.h is not on the include path; building without NCCL")
#undef USE_C10D_NCCL
#endif
#endif

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

namespace cddp::compat {

#if TORCH_VERSION_MAJOR >= 2
constexpr bool kBackendApi = true;   // collectives on c10d::Backend
using Collectives = c10d::Backend;
#else
constexpr bool kBackendApi = false;  // collectives on c10d::ProcessGroup
using Collectives = c10d::ProcessGroup;
#endif
using CollectivesPtr = c10::intrusive_ptr<Collectives>;
using StorePtr = c10::intrusive_ptr<c10d::Store>;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

// Gloo's allreduce sums bfloat16 in LibTorch 2.x (seen on Debian's 2.6) but refuses it in 1.13
// ("Invalid scalar type"): there C10dCommunicator sums bf16 itself (see allreduce_sum_).
constexpr bool kGlooSumsBFloat16 = TORCH_VERSION_MAJOR >= 2;

inline const char* torch_api_name() { return kBackendApi ? "LibTorch 2.x (c10d::Backend)" : "LibTorch 1.x (c10d::ProcessGroup)"; }

// Whether TCPStoreOptions has `useLibUV` (LibTorch >= 2.2; since 2.4 it defaults to true).
template <class O, class = void>
struct HasUseLibUV : std::false_type {};
template <class O>
struct HasUseLibUV<O, std::void_t<decltype(std::declval<O&>().useLibUV)>> : std::true_type {};

// Asks for c10d's classic TCPStore backend; a no-op where there is no other (1.x).
template <class O>
void use_classic_store_backend(O& opts) {
  if constexpr (HasUseLibUV<O>::value) opts.useLibUV = false;
}

// True for the error a LibTorch built without libuv (Debian 13's 2.6, for one) raises when the
// options ask for it: "use_libuv was requested but PyTorch was build without libuv support".
inline bool is_missing_libuv(const std::exception& e) {
  const std::string what = e.what();
  return what.find("libuv") != std::string::npos && what.find("without") != std::string::npos;
}

// A TCPStore: the server (rank 0, which also connects to itself as a client) or a client.
// No worker counting in the store itself (numWorkers unset): the caller counts ranks with
// add() so that it can say how many joined when the rendezvous times out.
// On 2.x the libuv backend is c10d's default and is used where the build has it; a build
// without libuv (Debian's) refuses it, and then the classic backend is used. Both speak the
// same protocol, so ranks may differ in which they run.
inline StorePtr make_tcp_store(const std::string& host, uint16_t port, bool is_server,
                               std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = port;
  opts.isServer = is_server;
  opts.waitWorkers = false;
  opts.timeout = timeout;
  if constexpr (HasUseLibUV<c10d::TCPStoreOptions>::value) {
    try {
      return c10::make_intrusive<c10d::TCPStore>(host, opts);
    } catch (const std::exception& e) {
      if (!is_missing_libuv(e)) throw;
      use_classic_store_backend(opts);
    }
  }
  return c10::make_intrusive<c10d::TCPStore>(host, opts);
}

inline StorePtr make_prefix_store(const std::string& prefix, const StorePtr& store) {
  return c10::make_intrusive<c10d::PrefixStore>(prefix, store);
}

// Gloo over TCP. `interface` (e.g. "eth0") wins over `hostname` (an address of this host to
// bind to); with both empty Gloo resolves this machine's hostname, falling back to loopback.
inline CollectivesPtr make_gloo(const StorePtr& store, int rank, int size, std::chrono::milliseconds timeout,
                                const std::string& interface, const std::string& hostname) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  if (!interface.empty())
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  else if (!hostname.empty())
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}

#ifdef USE_C10D_NCCL
inline CollectivesPtr make_nccl(const StorePtr& store, int rank, int size, std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
}
#endif

// Blocks until `work` is done; rethrows its error (Gloo ops carry the group's timeout).
inline void wait(const WorkPtr& work) { work->wait(); }

}  // namespace cddp::compat
