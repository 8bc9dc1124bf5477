// cuda_emu.h — just enough of CUDA to run topk_kernels.cu on the CPU, for a test on machines
// without a GPU (tests/gpu/topk_kernels_emu_test.cpp). NOT a general emulator.
//
// Compile topk_kernels.cu as C++ with -DCDDP_CUDA_EMULATION. Every CUDA thread of a block is a
// cooperative fiber (ucontext) on the calling OS thread; blocks run one after another, so
// `__shared__` can simply be `static` and atomics are plain read-modify-writes. __syncthreads()
// releases when every live thread of the block waits on it; warp collectives (__shfl*_sync,
// __ballot_sync, __match_any_sync) release when all 32 lanes of the warp wait on one. A thread
// that waits on anything else at that point is a divergence bug: the emulator aborts with a
// message (on a GPU that would be a hang or undefined behaviour). Launches are checked against
// settable Limits and fail the way a real launch does; cudaGetLastError() reports that.
#pragma once

#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

// ---- CUDA keywords -----------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3_emu { unsigned int x = 0, y = 0, z = 0; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

using cudaStream_t = struct CUstream_emu*;
// The real codes and messages of the few errors the launchers can meet.
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

namespace cudaemu {

enum class Wait { None, Block, Warp, Done };

// Launch limits the emulated device enforces, as a real one does (an over-limit launch fails
// with cudaErrorInvalidConfiguration and runs nothing). Tests lower them to reach the limit
// with small arrays.
struct Limits {
  long long max_threads_per_block = 1024;
  long long max_grid_x = 2147483647;
};

struct Fiber {
  ucontext_t ctx;
  Wait wait = Wait::None;
  unsigned int tid = 0;
  unsigned long long warp_ops = 0;  // collectives this lane has entered
};

struct Runtime {
  ucontext_t sched;
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  Fiber* current = nullptr;
  std::function<void()> body;
  dim3_emu block_idx, grid_dim, block_dim;
  // Warp exchange slots, double-buffered by collective parity: a lane can be at most one
  // collective ahead of a lane that has not read the previous one yet.
  std::vector<unsigned long long> slots;  // [warp][parity][lane]
  int sm_count = 2;
  Limits limits;
  cudaError_t last_error = cudaSuccess;  // what cudaGetLastError() returns (and clears)
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

inline int sm_count() { return rt().sm_count; }
inline void set_sm_count(int n) { rt().sm_count = n; }
inline const Limits& limits() { return rt().limits; }
inline void set_limits(const Limits& l) { rt().limits = l; }
inline unsigned long long& launches() {  // kernels run so far (tests count them)
  static unsigned long long n = 0;
  return n;
}

inline void fiber_entry() {
  Runtime& r = rt();
  r.body();
  r.current->wait = Wait::Done;
  swapcontext(&r.current->ctx, &r.sched);
  std::abort();  // never resumed
}

inline void yield_wait(Wait w) {
  Runtime& r = rt();
  r.current->wait = w;
  swapcontext(&r.current->ctx, &r.sched);
}

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "cuda_emu: %s (block %u)\n", what, rt().block_idx.x);
  std::abort();
}

inline void run_block(unsigned int threads) {
  Runtime& r = rt();
  constexpr size_t kStack = 64 * 1024;
  if (r.stacks.size() < threads) r.stacks.resize(threads, std::vector<char>(kStack));
  r.fibers.assign(threads, Fiber{});
  r.slots.assign(((threads + 31) / 32) * 2 * 32, 0);
  for (unsigned int t = 0; t < threads; ++t) {
    Fiber& f = r.fibers[t];
    f.tid = t;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = r.stacks[t].data();
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  const unsigned int warps = (threads + 31) / 32;
  for (;;) {
    for (Fiber& f : r.fibers) {
      if (f.wait != Wait::None) continue;
      r.current = &f;
      swapcontext(&r.sched, &f.ctx);
    }
    // Nobody can run: release a barrier, finish, or report a deadlock.
    bool released = false, all_done = true, any_block = false, block_ok = true;
    for (unsigned int w = 0; w < warps; ++w) {
      const unsigned int lo = w * 32, hi = lo + 32 < threads ? lo + 32 : threads;
      unsigned int at_warp = 0;
      for (unsigned int t = lo; t < hi; ++t) at_warp += r.fibers[t].wait == Wait::Warp;
      if (at_warp == hi - lo) {
        for (unsigned int t = lo; t < hi; ++t) r.fibers[t].wait = Wait::None;
        released = true;
      } else if (at_warp != 0) {
        die("warp collective reached by only part of a warp");
      }
    }
    if (released) continue;
    for (const Fiber& f : r.fibers) {
      all_done &= f.wait == Wait::Done;
      any_block |= f.wait == Wait::Block;
      block_ok &= f.wait == Wait::Block || f.wait == Wait::Done;
    }
    if (all_done) break;
    if (any_block && block_ok) {
      for (Fiber& f : r.fibers)
        if (f.wait == Wait::Block) f.wait = Wait::None;
      continue;
    }
    die("deadlock: threads wait on different barriers");
  }
}

inline cudaError_t launch(unsigned int grid, unsigned int threads, std::function<void()> body) {
  Runtime& r = rt();
  if (grid == 0 || threads == 0 || grid > r.limits.max_grid_x ||
      threads > r.limits.max_threads_per_block) {
    r.last_error = cudaErrorInvalidConfiguration;
    return cudaErrorInvalidConfiguration;
  }
  ++launches();
  r.body = std::move(body);
  r.grid_dim = dim3_emu{grid, 1, 1};
  r.block_dim = dim3_emu{threads, 1, 1};
  for (unsigned int b = 0; b < grid; ++b) {
    r.block_idx = dim3_emu{b, 0, 0};
    run_block(threads);
  }
  return cudaSuccess;
}

// Exchange one 64-bit word with the other lanes of the warp; returns the slot row.
inline const unsigned long long* warp_exchange(unsigned long long v) {
  Runtime& r = rt();
  Fiber& f = *r.current;
  const unsigned int lane = f.tid & 31, warp = f.tid >> 5;
  const unsigned int parity = static_cast<unsigned int>(f.warp_ops++ & 1);
  unsigned long long* row = &r.slots[(warp * 2 + parity) * 32];
  row[lane] = v;
  yield_wait(Wait::Warp);
  return row;
}

template <typename T>
unsigned long long to_bits(T v) {
  unsigned long long b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(unsigned long long b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace cudaemu

#define threadIdx (::dim3_emu{::cudaemu::rt().current->tid, 0, 0})
#define blockIdx (::cudaemu::rt().block_idx)
#define gridDim (::cudaemu::rt().grid_dim)
#define blockDim (::cudaemu::rt().block_dim)

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::cudaemu::rt().last_error;
  ::cudaemu::rt().last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}

inline void __syncthreads() { ::cudaemu::yield_wait(::cudaemu::Wait::Block); }
inline void __threadfence() {}

template <typename T>
inline T __ldcg(const T* p) { return *p; }

inline unsigned int __float_as_uint(float f) { return ::cudaemu::from_bits<unsigned int>(::cudaemu::to_bits(f)); }
inline float __fadd_rn(float a, float b) {
  volatile float s = a + b;  // no contraction, no excess precision on x86-64 SSE
  return s;
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __ffs(unsigned int x) { return __builtin_ffs(static_cast<int>(x)); }

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { unsigned int o = *p; *p = o + v; return o; }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  unsigned long long o = *p;
  *p = o + v;
  return o;
}

inline unsigned int __ballot_sync(unsigned int, bool pred) {
  const unsigned long long* row = ::cudaemu::warp_exchange(pred ? 1 : 0);
  unsigned int m = 0;
  for (int l = 0; l < 32; ++l) m |= (row[l] ? 1u : 0u) << l;
  return m;
}

template <typename T>
inline T __shfl_sync(unsigned int, T v, int src) {
  const unsigned long long* row = ::cudaemu::warp_exchange(::cudaemu::to_bits(v));
  return ::cudaemu::from_bits<T>(row[src & 31]);
}

template <typename T>
inline T __shfl_up_sync(unsigned int, T v, unsigned int delta) {
  const unsigned int lane = ::cudaemu::rt().current->tid & 31;
  const unsigned long long* row = ::cudaemu::warp_exchange(::cudaemu::to_bits(v));
  return lane >= delta ? ::cudaemu::from_bits<T>(row[lane - delta]) : v;
}

template <typename T>
inline unsigned int __match_any_sync(unsigned int, T v) {
  const unsigned long long* row = ::cudaemu::warp_exchange(::cudaemu::to_bits(v));
  const unsigned long long me = ::cudaemu::to_bits(v);
  unsigned int m = 0;
  for (int l = 0; l < 32; ++l) m |= (row[l] == me ? 1u : 0u) << l;
  return m;
}

inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = ::cudaemu::sm_count();
  return cudaSuccess;
}
