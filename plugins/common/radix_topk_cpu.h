// radix_topk_cpu.h — exact CPU top-k by magnitude (radix select), with error feedback fused in,
// and the seeded random-k selection (k smallest Philox priorities). Raw pointers in, raw
// pointers out: independent of the plugin ABI, so that the top-k and random-k plugins, the
// tests and the benchmarks share one implementation.
//
// Selection rule (both top-k and random-k): a total order on (key, index) — larger |x| first
// (random-k: smaller priority first), equal keys broken by LOWER index first. The result is a
// pure function of the input: it does not depend on the number of threads.
//
// Algorithm (top-k, see radix_topk_cpu.cpp for details): the magnitude bits `bits & 0x7fff…`
// of an IEEE value, read as an unsigned integer, order |x| (±inf included; -0 and +0 both map
// to 0 and tie). Pass 1 builds per-chunk histograms of the top 12 magnitude bits (computing
// acc = x + residual on the fly and storing it), pass 2 compacts every element at or above the
// bucket holding the k-th largest key, in index order, into a buffer and lists the boundary
// bucket's candidates; a few radix levels over those candidates find the exact threshold key
// and the last tied index taken; a final filter of the buffer writes the output. Workspace:
// about (k + boundary candidates) x (value + index) bytes, kept between calls.
//
// Threads: at::parallel_for over fixed chunks (at::get_num_threads() of them, at most, of at
// least 64K elements); called from inside a parallel region it runs on the calling thread.
// One RadixTopK is one workspace: use it from one thread at a time (one per plugin instance or
// per thread). The float compactions and random-k's Philox use AVX2 when the CPU has it
// (chosen at run time; same results either way).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace cddp::kernels {

class RadixTopK {
 public:
  RadixTopK();
  ~RadixTopK();
  RadixTopK(RadixTopK&&) noexcept;
  RadixTopK& operator=(RadixTopK&&) noexcept;
  RadixTopK(const RadixTopK&) = delete;
  RadixTopK& operator=(const RadixTopK&) = delete;

  // Exact top-k of |x| over the contiguous array x[0..n). Writes k pairs, sorted by index
  // ascending, to out_values[0..k) / out_indices[0..k); out_values[j] == x[out_indices[j]]
  // (original sign, bit for bit). Requires 0 <= k <= n (k == 0: nothing is written).
  //
  // residual != nullptr fuses error feedback: the selection is over acc = x + residual
  // (elementwise, one rounding), acc is stored into residual, out_values are acc values, and
  // afterwards residual = acc with the selected positions set to +0.0. residual may not alias
  // x or the outputs.
  //
  // Throws std::invalid_argument (message contains "NaN") when an element of x — or of acc —
  // is NaN; in the fused case the residual then already holds acc = x + residual (every
  // element), and no output has been written. Throws std::invalid_argument on bad sizes
  // (k < 0, k > n, n >= 2^31 with int32 indices).
  void select_float(const float* x, float* residual, int64_t n, int64_t k, float* out_values,
                    int32_t* out_indices);
  void select_float(const float* x, float* residual, int64_t n, int64_t k, float* out_values,
                    int64_t* out_indices);
  // DGC's momentum correction fused in front as well (Lin et al., ICLR 2018, "Deep Gradient
  // Compression", momentum correction): one pass over velocity, g and residual computes
  //   velocity ← momentum·velocity + g   (fl(fl(momentum·velocity) + g): ATen's mul_ then add_)
  //   acc = velocity + residual          (stored into residual)
  // and the selection then runs as select_float with residual, bit for bit. It will not mask
  // the velocity (DGC's factor masking): the caller zeroes velocity at out_indices, after
  // checking them. velocity, g and residual may not alias each other or the outputs.
  void select_float_momentum(float* velocity, const float* g, float momentum, float* residual, int64_t n,
                             int64_t k, float* out_values, int32_t* out_indices);
  void select_float_momentum(float* velocity, const float* g, float momentum, float* residual, int64_t n,
                             int64_t k, float* out_values, int64_t* out_indices);
  // The same for double (63-bit magnitude keys, more radix levels at the boundary).
  void select_double(const double* x, double* residual, int64_t n, int64_t k, double* out_values,
                     int32_t* out_indices);
  void select_double(const double* x, double* residual, int64_t n, int64_t k, double* out_values,
                     int64_t* out_indices);

  // Random-k: the k indices of [0, n) with the SMALLEST priorities
  //   priority(i) = philox_priority(seed, step, param_index, i)
  // (ties: lower index first), written sorted ascending to out_indices[0..k). One pass computes
  // the priorities and keeps those under a threshold that holds >= k of them with
  // overwhelming probability (8 sigma; should it not, a second pass takes them all), so
  // nothing of size n is materialised in the common case.
  void select_smallest_philox(uint64_t seed, int64_t step, int64_t param_index, int64_t n,
                              int64_t k, int32_t* out_indices);
  void select_smallest_philox(uint64_t seed, int64_t step, int64_t param_index, int64_t n,
                              int64_t k, int64_t* out_indices);

  // Bytes held by the workspace, and a way to give them back.
  std::size_t workspace_bytes() const noexcept;
  void release() noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Lane i%4 of Philox4x32-10 over counter randomk_counter(i/4, step, param_index) under
// randomk_key(seed) — the priority random-k gives element i (see philox.h).
uint32_t philox_priority(uint64_t seed, int64_t step, int64_t param_index, int64_t i);

namespace detail {
// For tests: the AVX2 kernels (chosen at run time on x86-64) can be switched off, so that the
// portable SSE2/scalar paths are exercised too. Returns the previous setting. Results are
// identical either way.
bool set_avx2_allowed(bool allowed) noexcept;
bool avx2_in_use() noexcept;
}  // namespace detail

}  // namespace cddp::kernels
