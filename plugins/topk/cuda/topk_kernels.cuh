// topk_kernels.cuh — raw-pointer CUDA kernels for top-k (by magnitude, fused with error
// feedback) and seeded random-k selection, with host launchers that take a cudaStream_t.
// No LibTorch in here: topk_cuda_bridge.{h,cpp} is the LibTorch-facing glue.
//
// Selection rule, identical to the CPU plugins (bitwise):
//   top-k     key(i) = bits(acc[i]) & 0x7fffffff  (uint32 order == |x| order, +0 and -0 tie)
//             the k LARGEST keys are selected.
//   random-k  priority(i) = lane i%4 of philox4x32_10(randomk_counter(i/4, step, param),
//             randomk_key(seed)); the k SMALLEST priorities are selected (internally the key is
//             ~priority, so both are "k largest keys").
//   Ties on the key: the lower index wins. Output is sorted by index ascending.
//
// Algorithm (AIR top-k, Zhang et al. SC'23, and CUB DeviceTopK style radix select): three
// radix passes of 11 + 11 + 10 bits over the uint32 key, every decision on the device:
//   K0 (top-k: fused) reads grad and residual, writes acc = grad + residual into residual,
//      builds a shared-memory histogram of key >> 21 and merges it into a global one; the
//      last block to finish picks the bucket that holds the k-th largest key.
//   K1 re-reads acc, histograms bits 20..10 of the keys in that bucket, appends those
//      candidates (key, index) to a buffer (capacity n/8; on overflow the later passes fall
//      back to reading the whole array), and counts per tile of 8192 elements the elements
//      that are certainly selected. Last block picks the second digit.
//   K2 over the candidates: histogram of bits 9..0; last block fixes the threshold key T and
//      `need`, the number of elements equal to T to take (the first `need` by index).
//   K3 over the candidates: per-tile counts of key > T and key == T; the last block scans the
//      tiles into output offsets.
//   K4 re-reads acc per tile, block-scans the selection flags in index order, writes the
//      (value, index) pairs to their final slots and zeroes the residual there (+0.0f).
// The host launches a fixed sequence of kernels with fixed grids; nothing is read back, so
// a step never synchronises the host. Every launch is checked first against the device limits
// (launch_check.h: grid, block, shared memory), and every grid is capped at the device's
// gridDim.x: the tile kernels walk their tiles in a grid-stride loop. Memory traffic for top-k with feedback is about
// 20 bytes per element (12 for the fused pass, 4 + 4 for two re-reads of acc).
#pragma once

#if defined(CDDP_CUDA_EMULATION)
#include "cuda_emu.h"  // CPU emulation for tests/gpu/topk_kernels_emu_test.cpp
#else
#include <cuda_runtime.h>
#endif

#include <cstddef>
#include <cstdint>
#include <cstdio>

namespace cddp::topk_cuda {

// Bytes of scratch memory that launch_topk / launch_randomk need for n elements. The caller
// allocates it (aligned to at least 16 bytes; the caching allocator gives 512) and may free it
// as soon as the launches are enqueued, stream-ordered. Not needed (may be null) when k == 0.
size_t workspace_bytes(int64_t n, bool indices_int64);

// True when indices for a tensor of n elements must be int64 (the ABI's rule: n >= 2^31).
inline bool needs_int64_indices(int64_t n) { return n >= (int64_t{1} << 31); }

// Top-k by magnitude fused with error feedback.
//   grad      [n] float32, contiguous, read only.
//   residual  [n] float32, contiguous, or nullptr. When given: acc = grad + residual is written
//             into residual, and residual is zeroed (+0.0f) at the k selected positions, so on
//             return residual == acc - decompress(C(acc)). When nullptr: acc = grad.
//   out_values  [k] float32: acc at the selected positions (original sign), index order.
//   out_indices [k] int32, or int64 when indices_int64 (must be true when n >= 2^31).
//   nan_flag  device uint32 or nullptr: set to 1 when acc holds a NaN (NaN sorts as the
//             largest magnitude). Never read here: reading it is the caller's (synchronising)
//             business.
// 0 <= k <= n. k == 0 selects nothing: with a residual, acc is still written into it (one
// elementwise add; NaN is not flagged then); n == 0 does nothing. Enqueues everything on
// `stream`; returns the first error: cudaErrorInvalidValue for bad arguments,
// cudaErrorInvalidConfiguration for a launch refused by the limits check, else the CUDA error
// of the failing call. last_error_detail() then names the call.
cudaError_t launch_topk(const float* grad, float* residual, int64_t n, int64_t k,
                        float* out_values, void* out_indices, bool indices_int64,
                        unsigned int* nan_flag, void* workspace, size_t workspace_size,
                        cudaStream_t stream);

// Benchmarking aid: the same as launch_topk but stops after the first `stages` of its steps
// (0: the workspace memset only; 1: + K0, the fused pass; 2: + K1; 3: + K2; 4: + K3; 5: all,
// == launch_topk). Outputs are incomplete for stages < 5; times of successive stage counts,
// differenced, give each kernel's share. Same arguments otherwise.
cudaError_t launch_topk_stages(int stages, const float* grad, float* residual, int64_t n,
                               int64_t k, float* out_values, void* out_indices,
                               bool indices_int64, unsigned int* nan_flag, void* workspace,
                               size_t workspace_size, cudaStream_t stream);

// The single-pass design of issue #15, for the fused case (a residual, int32 indices): the
// array is read once — acc = g + r written back, and every element at or above a threshold
// taken from a sample of 8192 elements appended in index order to a candidate list — then
// the exact selection runs over the list (about 1-4 % of n at k = 1 %). When the sample
// misleads (fewer than k candidates, or more than 4k + 8192), the device falls back to the
// multi-pass selection over acc by itself; nothing is read back. Same arguments, same result
// bit for bit as launch_topk (tests/gpu/cuda_launch_emu_test.cpp checks both tails under the
// emulator); workspace_bytes_single_pass(n, k, ...) bytes of workspace. Outside its case (no
// residual, int64 indices, k == 0) it is launch_topk. Timed against launch_topk by
// bench_topk_cuda; not yet what the bridge calls (it has not run on a GPU).
size_t workspace_bytes_single_pass(int64_t n, int64_t k, bool indices_int64);
cudaError_t launch_topk_single_pass(const float* grad, float* residual, int64_t n, int64_t k,
                                    float* out_values, void* out_indices, bool indices_int64,
                                    unsigned int* nan_flag, void* workspace,
                                    size_t workspace_size, cudaStream_t stream);
#if defined(CDDP_CUDA_EMULATION)
// Emulator tests only (reads the workspace on the host): which tail the last
// launch_topk_single_pass on this workspace took — 1: exact over the candidates, 2: fallback.
int single_pass_tail_for_tests(const void* workspace, int64_t n, int64_t k);
#endif

// Seeded random-k: the k indices of smallest Philox priority (see above), ascending.
// 0 <= k <= n (k == 0: nothing is launched). out_indices as for launch_topk.
cudaError_t launch_randomk(uint64_t seed, int64_t step, int64_t param_index, int64_t n,
                           int64_t k, void* out_indices, bool indices_int64, void* workspace,
                           size_t workspace_size, cudaStream_t stream);

// out[i] = a[i] + b[i]: the "one plain pass that reads two arrays and writes one" that the
// benchmark compares the fused kernel against (16-byte accesses when aligned).
cudaError_t launch_plain_add(const float* a, const float* b, float* out, int64_t n,
                             cudaStream_t stream);

// One line describing the last failure of a launcher on this thread (the argument, the
// refused launch with the kernel's name and the limit, or the CUDA call and its error); ""
// after a launcher call that succeeded. Valid until the next launcher call on this thread.
const char* last_error_detail();

// Tracing of CUDA calls: with a sink, every launcher writes one line per CUDA call it makes,
// before the call ("cddp-cuda: > k1_hist<read> grid=528 block=512 ...") and after it
// ("cddp-cuda: < k1_hist<read>: no error"), flushed at once. nullptr (the default) turns it
// off. Not read from the environment here: the caller decides once (topk_cuda_bridge.cpp does,
// from CDDP_CUDA_TRACE). Under CUDA_LAUNCH_BLOCKING=1 a launch returns when its kernel is done,
// so the last line of a run that hangs names the kernel it hangs in.
void set_trace(std::FILE* sink);

}  // namespace cddp::topk_cuda
