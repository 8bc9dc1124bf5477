// topk_kernels.cu — see topk_kernels.cuh for the selection rule and the pass structure.
#include "topk_kernels.cuh"

#include "philox.h"

#include "launch_check.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cddp::topk_cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Geometry. Every tile-structured kernel runs kThreads threads; thread t of a tile handles the
// groups of 4 elements tile*kTileGroups + r*kThreads + t for r = 0..kRounds-1, so one round of
// a block covers kThreads*4 consecutive elements (coalesced 16-byte accesses) and the rounds
// walk the tile in index order.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kRounds = 4;
constexpr int64_t kTileGroups = int64_t{kThreads} * kRounds;  // 2048 groups
constexpr int64_t kTileElems = kTileGroups * 4;                  // 8192 elements
constexpr int kBlocksPerSM = 4;                                  // 512 threads, <= 9 KB smem

// Radix digits, most significant first: 11 + 11 + 10 bits.
constexpr int kBins0 = 2048, kShift0 = 21;
constexpr int kBins1 = 2048, kShift1 = 10;
constexpr int kBins2 = 1024, kShift2 = 0;
constexpr int kMaxBins = 2048;

static_assert(kMaxBins % kThreads == 0, "bins per thread");

// Device-side state of one selection. Zeroed by the host (cudaMemsetAsync) before K0.
struct State {
  unsigned int blocks_done;        // "last block" counter, reset by the last block
  unsigned int prefix;             // key bits fixed so far; after K2: the threshold key T
  unsigned long long k_rem;        // still to select among keys matching prefix; after K2: need
  unsigned long long cand_count;   // candidates K1 found (may exceed the capacity)
  unsigned long long bucket_count; // elements in the chosen bucket; after K2: #(key == T)
  unsigned int skip;               // nonzero: K0..K4 on this state return at once (set on the
                                   // device by the single-pass design's filter, which decides
                                   // which of its two tails runs; 0 after the memset)
};

// Workspace layout (offsets from the base, each section 256-byte aligned).
struct Layout {
  size_t state, hist, tile_gt, tile_eq, tile_off, tile_eqb, cand_key, cand_idx, total;
  int64_t num_tiles;
  unsigned long long cand_cap;
};

constexpr size_t align256(size_t x) { return (x + 255) & ~size_t{255}; }

Layout make_layout(int64_t n, bool idx64) {
  Layout l{};
  l.num_tiles = std::max<int64_t>(1, (n + kTileElems - 1) / kTileElems);
  l.cand_cap = static_cast<unsigned long long>(std::min<int64_t>(n, n / 8 + 4096));
  size_t off = 0;
  l.state = off;    off += align256(sizeof(State));
  l.hist = off;     off += align256(sizeof(unsigned long long) * kMaxBins);
  l.tile_gt = off;  off += align256(sizeof(unsigned int) * l.num_tiles);
  l.tile_eq = off;  off += align256(sizeof(unsigned int) * l.num_tiles);
  l.tile_off = off; off += align256(sizeof(unsigned long long) * l.num_tiles);
  l.tile_eqb = off; off += align256(sizeof(unsigned long long) * l.num_tiles);
  l.cand_key = off; off += align256(sizeof(unsigned int) * l.cand_cap);
  l.cand_idx = off; off += align256((idx64 ? 8 : 4) * l.cand_cap);
  l.total = off;
  return l;
}

// ---------------------------------------------------------------------------------------------
// Key sources. load4(g, key, val) fills the keys (and float values) of group g, i.e. elements
// 4g .. 4g+3, and returns how many of them exist (0..4).

__device__ __forceinline__ unsigned int mag_key(float v) {
  return __float_as_uint(v) & 0x7fffffffu;
}

// Reads acc from one float array (top-k passes after K0, and K0 without a residual).
template <bool kAligned>
struct ReadSrc {
  const float* x;
  int64_t n;
  static constexpr bool kHasValues = true;
  static constexpr const char* kName = kAligned ? "read" : "read,unaligned";
  __device__ __forceinline__ int load4(int64_t g, unsigned int key[4], float val[4]) const {
    const int64_t i = g * 4;
    if (kAligned && i + 3 < n) {
      const float4 v = reinterpret_cast<const float4*>(x)[g];
      val[0] = v.x; val[1] = v.y; val[2] = v.z; val[3] = v.w;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) val[j] = (i + j < n) ? x[i + j] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) key[j] = mag_key(val[j]);
    const int64_t rem = n - i;
    return rem <= 0 ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));
  }
};

// K0 with error feedback: acc = g + r, written back into r.
template <bool kAligned>
struct FusedSrc {
  const float* g;
  float* r;
  int64_t n;
  static constexpr bool kHasValues = true;
  static constexpr const char* kName = kAligned ? "fused" : "fused,unaligned";
  __device__ __forceinline__ int load4(int64_t grp, unsigned int key[4], float val[4]) const {
    const int64_t i = grp * 4;
    if (kAligned && i + 3 < n) {
      const float4 a = reinterpret_cast<const float4*>(g)[grp];
      const float4 b = reinterpret_cast<float4*>(r)[grp];
      float4 c;
      c.x = __fadd_rn(a.x, b.x);
      c.y = __fadd_rn(a.y, b.y);
      c.z = __fadd_rn(a.z, b.z);
      c.w = __fadd_rn(a.w, b.w);
      reinterpret_cast<float4*>(r)[grp] = c;
      val[0] = c.x; val[1] = c.y; val[2] = c.z; val[3] = c.w;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (i + j < n) {
          const float c = __fadd_rn(g[i + j], r[i + j]);
          r[i + j] = c;
          val[j] = c;
        } else {
          val[j] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) key[j] = mag_key(val[j]);
    const int64_t rem = n - i;
    return rem <= 0 ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));
  }
};

// Random-k: key = ~priority, so that "k largest keys" == "k smallest priorities".
struct RandkSrc {
  uint64_t seed;
  int64_t step;
  int64_t param_index;
  int64_t n;
  static constexpr bool kHasValues = false;
  static constexpr const char* kName = "randomk";
  __device__ __forceinline__ int load4(int64_t g, unsigned int key[4], float val[4]) const {
    const philox::Block b = philox::philox4x32_10(
        philox::randomk_counter(static_cast<uint64_t>(g), step, param_index),
        philox::randomk_key(seed));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      key[j] = ~b.c[j];
      val[j] = 0.0f;
    }
    const int64_t rem = n - g * 4;
    return rem <= 0 ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));
  }
};

// ---------------------------------------------------------------------------------------------
// Block-wide helpers (blockDim.x == kThreads).

template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const T o = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += o;
  }
  return v;
}

// Exclusive prefix sum over the block in thread order; `total` gets the block's sum.
template <typename T>
__device__ __forceinline__ T block_exclusive_scan(T v, T& total) {
  __shared__ T warp_sums[kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const T incl = warp_inclusive_scan(v);
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    T w = lane < kWarps ? warp_sums[lane] : T(0);
    w = warp_inclusive_scan(w);
    if (lane < kWarps) warp_sums[lane] = w;
  }
  __syncthreads();
  const T before = warp > 0 ? warp_sums[warp - 1] : T(0);
  total = warp_sums[kWarps - 1];
  __syncthreads();  // warp_sums may be reused by the next call
  return before + incl - v;
}

// The classic threadfence-reduction pattern: true in exactly one block, the last to arrive,
// after every other block's global writes and atomics are visible.
__device__ __forceinline__ bool arrive_last(State* st) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned int prev = atomicAdd(&st->blocks_done, 1u);
    last = (prev == gridDim.x - 1);
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

__device__ __forceinline__ void smem_hist_clear(unsigned int* sh, int bins) {
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
}

__device__ __forceinline__ void smem_hist_flush(const unsigned int* sh, int bins,
                                                unsigned long long* ghist) {
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += kThreads) {
    const unsigned int c = sh[b];
    if (c) atomicAdd(&ghist[b], static_cast<unsigned long long>(c));
  }
}

// Run by the whole last block: finds the digit d whose bucket holds the k_rem-th largest key
// among those matching the prefix, i.e. S(d) >= k_rem > S(d+1) with S(d) = #(digit >= d).
// Updates prefix |= d << shift, k_rem -= S(d+1), bucket_count = hist[d]; clears the
// histogram and the block counter for the next pass. `k_first` seeds k_rem in pass 0.
__device__ void select_bucket(State* st, unsigned long long* ghist, int bins, int shift,
                              unsigned long long k_first, bool first_pass) {
  constexpr int kPer = kMaxBins / kThreads;  // 4
  const int per = bins / kThreads;           // 4 or 2
  const unsigned long long k_rem = first_pass ? k_first : st->k_rem;
  // Thread t owns ranks q = t*per .. t*per+per-1, rank q = digit bins-1-q (descending digits).
  unsigned long long h[kPer];
  unsigned long long local = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    h[j] = 0;
    if (j < per) {
      const int d = bins - 1 - (threadIdx.x * per + j);
      h[j] = __ldcg(&ghist[d]);
      local += h[j];
    }
  }
  unsigned long long total;
  unsigned long long running = block_exclusive_scan(local, total);
  // block_exclusive_scan ends with __syncthreads(): every thread has read k_rem by now.
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    if (j < per) {
      if (running < k_rem && running + h[j] >= k_rem) {
        const unsigned int d = static_cast<unsigned int>(bins - 1 - (threadIdx.x * per + j));
        st->prefix = (first_pass ? 0u : st->prefix) | (d << shift);
        st->k_rem = k_rem - running;
        st->bucket_count = h[j];
      }
      running += h[j];
    }
  }
  for (int b = threadIdx.x; b < bins; b += kThreads) ghist[b] = 0;
  if (threadIdx.x == 0) st->blocks_done = 0;
}

// ---------------------------------------------------------------------------------------------
// K0: full pass, histogram of key >> 21. With FusedSrc it also writes acc into the residual.
template <class Src>
__global__ void __launch_bounds__(kThreads)
k0_hist(Src src, int64_t n, unsigned long long k, State* st, unsigned long long* ghist,
        unsigned int* nan_flag) {
  if (st->skip) return;  // uniform: the whole grid skips
  __shared__ unsigned int sh[kBins0];
  smem_hist_clear(sh, kBins0);
  const int64_t ngroups = (n + 3) / 4;
  bool nan = false;
  for (int64_t g = int64_t{blockIdx.x} * kThreads + threadIdx.x; g < ngroups;
       g += int64_t{gridDim.x} * kThreads) {
    unsigned int key[4];
    float val[4];
    const int cnt = src.load4(g, key, val);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < cnt) {
        atomicAdd(&sh[key[j] >> kShift0], 1u);
        if (Src::kHasValues) nan |= key[j] > 0x7f800000u;
      }
    }
  }
  if (Src::kHasValues && nan_flag != nullptr && nan) *nan_flag = 1u;
  smem_hist_flush(sh, kBins0, ghist);
  if (arrive_last(st)) select_bucket(st, ghist, kBins0, kShift0, k, true);
}

// Warp-aggregated append of (key, index) to the candidate buffer. All 32 lanes must call it.
template <typename IdxT>
__device__ __forceinline__ void append_candidate(bool take, unsigned int key, int64_t idx,
                                                 State* st, unsigned int* cand_key,
                                                 IdxT* cand_idx, unsigned long long cap) {
  const unsigned int mask = __ballot_sync(0xffffffffu, take);
  if (mask == 0) return;
  const int lane = threadIdx.x & 31;
  const int leader = __ffs(mask) - 1;
  unsigned long long base = 0;
  if (lane == leader) base = atomicAdd(&st->cand_count, static_cast<unsigned long long>(__popc(mask)));
  base = __shfl_sync(0xffffffffu, base, leader);
  if (take) {
    const unsigned long long pos = base + __popc(mask & ((1u << lane) - 1u));
    if (pos < cap) {
      cand_key[pos] = key;
      cand_idx[pos] = static_cast<IdxT>(idx);
    }
  }
}

// K1: tile pass. Histogram of bits 20..10 of the keys in bucket b0, candidates appended, and
// per tile: tile_gt = #(key >> 21 > b0), tile_eq = 0.
template <class Src, typename IdxT>
__global__ void __launch_bounds__(kThreads)
k1_hist(Src src, int64_t n, int64_t num_tiles, State* st, unsigned long long* ghist,
        unsigned int* tile_gt, unsigned int* tile_eq, unsigned int* cand_key, IdxT* cand_idx,
        unsigned long long cap) {
  if (st->skip) return;
  __shared__ unsigned int sh[kBins1];
  smem_hist_clear(sh, kBins1);
  const unsigned int b0 = st->prefix >> kShift0;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    unsigned int gt = 0;
#pragma unroll 1
    for (int r = 0; r < kRounds; ++r) {
      const int64_t g = tile * kTileGroups + int64_t{r} * kThreads + threadIdx.x;
      unsigned int key[4];
      float val[4];
      const int cnt = src.load4(g, key, val);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const unsigned int d0 = key[j] >> kShift0;
        const bool valid = j < cnt;
        gt += (valid && d0 > b0) ? 1u : 0u;
        const bool cand = valid && d0 == b0;
        if (cand) atomicAdd(&sh[(key[j] >> kShift1) & (kBins1 - 1)], 1u);
        append_candidate(cand, key[j], g * 4 + j, st, cand_key, cand_idx, cap);
      }
    }
    unsigned int tile_total;
    block_exclusive_scan(gt, tile_total);
    if (threadIdx.x == 0) {
      tile_gt[tile] = tile_total;
      tile_eq[tile] = 0;
    }
  }
  smem_hist_flush(sh, kBins1, ghist);
  if (arrive_last(st)) select_bucket(st, ghist, kBins1, kShift1, 0, false);
}

// K2: histogram of bits 9..0 of the keys whose top 22 bits match; over the candidates, or over
// the whole array when the candidate buffer overflowed.
template <class Src, typename IdxT>
__global__ void __launch_bounds__(kThreads)
k2_hist(Src src, int64_t n, State* st, unsigned long long* ghist, const unsigned int* cand_key,
        unsigned long long cap) {
  if (st->skip) return;
  __shared__ unsigned int sh[kBins2];
  smem_hist_clear(sh, kBins2);
  const unsigned int p1 = st->prefix >> kShift1;
  const unsigned long long count = st->cand_count;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  if (count <= cap) {
    for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
         i < static_cast<int64_t>(count); i += stride) {
      const unsigned int key = cand_key[i];
      if ((key >> kShift1) == p1) atomicAdd(&sh[key & (kBins2 - 1)], 1u);
    }
  } else {
    const int64_t ngroups = (n + 3) / 4;
    for (int64_t g = int64_t{blockIdx.x} * kThreads + threadIdx.x; g < ngroups; g += stride) {
      unsigned int key[4];
      float val[4];
      const int cnt = src.load4(g, key, val);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (j < cnt && (key[j] >> kShift1) == p1) atomicAdd(&sh[key[j] & (kBins2 - 1)], 1u);
    }
  }
  smem_hist_flush(sh, kBins2, ghist);
  if (arrive_last(st)) select_bucket(st, ghist, kBins2, kShift2, 0, false);
}

// K3: per-tile counts of key > T and key == T among the bucket-b0 elements (added to K1's
// tile_gt), then, in the last block, the tile scan:
//   tile_eqb[t] = #(key == T) in tiles before t
//   sel[t]      = tile_gt[t] + clamp(need - tile_eqb[t], 0, tile_eq[t])
//   tile_off[t] = sum of sel over tiles before t
template <class Src, typename IdxT>
__global__ void __launch_bounds__(kThreads)
k3_tiles(Src src, int64_t n, int64_t num_tiles, State* st, unsigned int* tile_gt,
         unsigned int* tile_eq, unsigned long long* tile_off, unsigned long long* tile_eqb,
         const unsigned int* cand_key, const IdxT* cand_idx, unsigned long long cap) {
  if (st->skip) return;
  const unsigned int T = st->prefix;
  const unsigned int b0 = T >> kShift0;
  const unsigned long long count = st->cand_count;
  if (count <= cap) {
    const int lane = threadIdx.x & 31;
    const int64_t warp_global = (int64_t{blockIdx.x} * kThreads + threadIdx.x) >> 5;
    const int64_t warp_stride = (int64_t{gridDim.x} * kThreads) >> 5;
    for (int64_t base = warp_global * 32; base < static_cast<int64_t>(count);
         base += warp_stride * 32) {
      const int64_t i = base + lane;
      unsigned long long code = ~0ull;  // no class
      if (i < static_cast<int64_t>(count)) {
        const unsigned int key = cand_key[i];
        const int64_t tile = static_cast<int64_t>(cand_idx[i]) / kTileElems;
        if (key > T) code = static_cast<unsigned long long>(tile) * 2;
        else if (key == T) code = static_cast<unsigned long long>(tile) * 2 + 1;
      }
      // Candidates were appended warp by warp in index order, so neighbours mostly share a
      // tile: one atomic per (tile, class) group of lanes.
      const unsigned int peers = __match_any_sync(0xffffffffu, code);
      if (code != ~0ull && lane == __ffs(peers) - 1) {
        unsigned int* dst = (code & 1) ? tile_eq : tile_gt;
        atomicAdd(&dst[code >> 1], static_cast<unsigned int>(__popc(peers)));
      }
    }
  } else {
    for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
      unsigned int packed = 0;  // gt << 16 | eq: at most 16 each per thread
#pragma unroll 1
      for (int r = 0; r < kRounds; ++r) {
        const int64_t g = tile * kTileGroups + int64_t{r} * kThreads + threadIdx.x;
        unsigned int key[4];
        float val[4];
        const int cnt = src.load4(g, key, val);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (j < cnt && (key[j] >> kShift0) == b0) {
            if (key[j] > T) packed += 1u << 16;
            else if (key[j] == T) packed += 1u;
          }
        }
      }
      // Per tile at most 8192 of each: both halves fit in 16 bits.
      unsigned int tot;
      block_exclusive_scan(packed, tot);
      if (threadIdx.x == 0) {
        tile_gt[tile] += tot >> 16;
        tile_eq[tile] += tot & 0xffffu;
      }
    }
  }
  if (!arrive_last(st)) return;

  // Tile scan in the last block, kThreads * kPer tiles per chunk.
  constexpr int kPer = 8;
  const long long need = static_cast<long long>(st->k_rem);
  unsigned long long eq_carry = 0, off_carry = 0;
  for (int64_t chunk = 0; chunk < num_tiles; chunk += int64_t{kThreads} * kPer) {
    const int64_t t0 = chunk + int64_t{threadIdx.x} * kPer;
    unsigned int eq[kPer], gt[kPer];
    unsigned long long eq_sum = 0;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const bool ok = t0 + j < num_tiles;
      eq[j] = ok ? __ldcg(&tile_eq[t0 + j]) : 0u;
      gt[j] = ok ? __ldcg(&tile_gt[t0 + j]) : 0u;
      eq_sum += eq[j];
    }
    unsigned long long eq_total;
    unsigned long long eq_before = eq_carry + block_exclusive_scan(eq_sum, eq_total);
    unsigned long long sel[kPer];
    unsigned long long sel_sum = 0;
    unsigned long long eb = eq_before;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      long long take = need - static_cast<long long>(eb);
      take = take < 0 ? 0 : (take > eq[j] ? eq[j] : take);
      sel[j] = gt[j] + static_cast<unsigned long long>(take);
      sel_sum += sel[j];
      eb += eq[j];
    }
    unsigned long long sel_total;
    unsigned long long off = off_carry + block_exclusive_scan(sel_sum, sel_total);
    eb = eq_before;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      if (t0 + j < num_tiles) {
        tile_eqb[t0 + j] = eb;
        tile_off[t0 + j] = off;
      }
      eb += eq[j];
      off += sel[j];
    }
    eq_carry += eq_total;
    off_carry += sel_total;
  }
  if (threadIdx.x == 0) st->blocks_done = 0;
}

// K4: tile by tile (one tile per block while the grid is under the device's gridDim.x limit,
// else each block walks tiles blockIdx.x, + gridDim.x, ...: the grid is capped by the checked
// launch, so a huge n never asks for more blocks than the device takes). Selected: key > T, or
// key == T with tie rank (by index) < need. Writes (value, index) at tile_off + in-tile rank,
// zeroes the residual there.
template <class Src, typename IdxT, bool kZeroResidual>
__global__ void __launch_bounds__(kThreads)
k4_compact(Src src, int64_t n, int64_t num_tiles, const State* st,
           const unsigned long long* tile_off, const unsigned long long* tile_eqb,
           float* out_values, IdxT* out_indices, float* residual) {
  if (st->skip) return;
  const unsigned int T = st->prefix;
  const long long need = static_cast<long long>(st->k_rem);
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {  // uniform per block
    unsigned long long out_base = tile_off[tile];
    long long eq_seen = static_cast<long long>(tile_eqb[tile]);  // ties before this round
#pragma unroll 1
    for (int r = 0; r < kRounds; ++r) {
      const int64_t g = tile * kTileGroups + int64_t{r} * kThreads + threadIdx.x;
      unsigned int key[4];
      float val[4];
      const int cnt = src.load4(g, key, val);
      unsigned int gt = 0, eq = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < cnt) {
          gt += key[j] > T ? 1u : 0u;
          eq += key[j] == T ? 1u : 0u;
        }
      }
      unsigned int tot;
      const unsigned int excl = block_exclusive_scan((gt << 16) | eq, tot);  // <= 2048 each
      const unsigned int gt_excl = excl >> 16, eq_excl = excl & 0xffffu;
      const unsigned int gt_tot = tot >> 16, eq_tot = tot & 0xffffu;
      const long long need_rem = need - eq_seen;  // ties still to take from this round on
      auto clampll = [](long long v, long long hi) { return v < 0 ? 0 : (v > hi ? hi : v); };
      unsigned long long pos = out_base + gt_excl + clampll(need_rem, eq_excl);
      long long rank = eq_seen + eq_excl;  // tie rank of this thread's first tie
      if (gt | eq) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (j >= cnt) continue;
          bool take = key[j] > T;
          if (key[j] == T) {
            take = rank < need;
            ++rank;
          }
          if (take) {
            const int64_t idx = g * 4 + j;
            if (Src::kHasValues) out_values[pos] = val[j];
            out_indices[pos] = static_cast<IdxT>(idx);
            if (kZeroResidual) residual[idx] = 0.0f;
            ++pos;
          }
        }
      }
      out_base += gt_tot + clampll(need_rem, eq_tot);
      eq_seen += eq_tot;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The single-pass design (launch_topk_single_pass; topk_kernels.cuh says why):
//   S0  K0 over a sample of m evenly spaced elements of acc (computed, not stored): the 11-bit
//       bucket holding the q-th largest sampled key, q a little above m*k/n. Its lower bound
//       `lo` is, with high probability, at or below the k-th largest key of the whole array.
//   S1  sp1_filter: the one pass over the array. acc = g + r into r, and every element with
//       key >= lo appended, in index order, to a candidate list (tiles taken in order from an
//       atomic counter, their output offsets chained by a decoupled look-back). The block that
//       finishes the last tile knows C, the number of candidates, and picks the tail:
//         k <= C <= cap: the k largest keys of the array are all candidates (everything else
//           is below lo, and at least k candidates are not) — exact selection over the list;
//         otherwise (the sample misled, or too many candidates): the multi-pass K0'..K4 over
//           acc, which is in r by now. Correct either way; only the time differs.
//   S2  exact: K0..K4 over the list (padded with +0.0 to its capacity: padding sorts below and
//       after every candidate), whose output positions sp_map turns into indices, zeroing the
//       residual there. Ties: the list is in index order, so lower position = lower index.
struct SampleSrc {
  const float* g;
  const float* r;
  int64_t n;  // elements of the array
  int64_t m;  // sampled: i(s) = floor(s * n / m), s < m
  static constexpr bool kHasValues = false;
  static constexpr const char* kName = "sample";
  __device__ __forceinline__ int load4(int64_t grp, unsigned int key[4], float val[4]) const {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t s = grp * 4 + j;
      key[j] = 0;
      val[j] = 0.0f;
      if (s < m) {
        const int64_t i = m == n ? s : (s * n) / m;
        key[j] = mag_key(__fadd_rn(g[i], r[i]));
      }
    }
    const int64_t rem = m - grp * 4;
    return rem <= 0 ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));
  }
};

struct SpState {
  unsigned int tiles_taken;  // the atomic tile counter of sp1_filter
  unsigned int pad;
  unsigned long long count;  // C, the candidates found (may exceed the capacity)
};

// Look-back status of a tile: 0 = not yet, A | n = this tile holds n candidates, P | n = the
// tiles up to and including this one hold n.
constexpr unsigned long long kStatA = 1ull << 62, kStatP = 2ull << 62;
constexpr unsigned long long kStatMask = (1ull << 62) - 1;

__device__ __forceinline__ void publish(unsigned long long* p, unsigned long long w) {
  __threadfence();
  *reinterpret_cast<volatile unsigned long long*>(p) = w;
}
__device__ __forceinline__ unsigned long long peek(const unsigned long long* p) {
  return *reinterpret_cast<const volatile unsigned long long*>(p);
}

// S1. Tiles are taken from sp->tiles_taken, so a tile's predecessor was taken earlier by a
// block that is running and publishes it without waiting on anything later: the look-back
// spin always ends (it starts at tile 0, which waits on nothing). Under the emulator blocks
// run one after another and block 0 takes every tile: the spin never spins.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads)
sp1_filter(FusedSrc<kAligned> src, int64_t n, int64_t num_tiles, const State* sample_st,
           SpState* sp, unsigned long long* status, float* cand_val, int32_t* cand_idx,
           unsigned long long cap, unsigned long long k, State* exact_st, State* full_st,
           unsigned int* nan_flag) {
  __shared__ long long s_tile;
  __shared__ unsigned long long s_base;
  const unsigned int lo = sample_st->prefix;  // candidates: key >= lo
  bool nan = false;
  for (;;) {
    if (threadIdx.x == 0) s_tile = static_cast<long long>(atomicAdd(&sp->tiles_taken, 1u));
    __syncthreads();
    const int64_t tile = s_tile;
    if (tile >= num_tiles) break;  // uniform
    float val[kRounds][4];
    unsigned int take = 0;          // bit r*4+j: element j of round r is a candidate
    unsigned long long packed = 0;  // 16 bits per round: this thread's candidates (<= 4)
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      const int64_t g = tile * kTileGroups + int64_t{r} * kThreads + threadIdx.x;
      unsigned int key[4];
      const int cnt = src.load4(g, key, val[r]);
      unsigned int c = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < cnt) {
          nan |= key[j] > 0x7f800000u;
          if (key[j] >= lo) {
            take |= 1u << (r * 4 + j);
            ++c;
          }
        }
      }
      packed |= static_cast<unsigned long long>(c) << (16 * r);
    }
    // One scan for the four rounds: each 16-bit field sums to <= 2048 over the block.
    unsigned long long tot;
    const unsigned long long excl = block_exclusive_scan(packed, tot);
    unsigned long long tile_total = 0;
#pragma unroll
    for (int r = 0; r < kRounds; ++r) tile_total += (tot >> (16 * r)) & 0xffffu;
    if (threadIdx.x == 0) {
      unsigned long long before = 0;
      if (tile == 0) {
        publish(&status[0], kStatP | tile_total);
      } else {
        publish(&status[tile], kStatA | tile_total);
        for (int64_t p = tile - 1;;) {
          const unsigned long long w = peek(&status[p]);
          if (w == 0) continue;  // its block has the tile and is about to publish
          before += w & kStatMask;
          if ((w >> 62) == 2) break;
          --p;
        }
        publish(&status[tile], kStatP | (before + tile_total));
      }
      s_base = before;
      if (tile == num_tiles - 1) {  // every earlier tile is counted: C is known
        const unsigned long long c = before + tile_total;
        sp->count = c;
        const bool exact = c >= k && c <= cap;
        exact_st->skip = exact ? 0u : 1u;
        full_st->skip = exact ? 1u : 0u;
      }
    }
    __syncthreads();
    const unsigned long long base = s_base;
    unsigned long long round_off = 0;
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      const int64_t g = tile * kTileGroups + int64_t{r} * kThreads + threadIdx.x;
      unsigned long long pos = base + round_off + ((excl >> (16 * r)) & 0xffffu);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if ((take >> (r * 4 + j)) & 1u) {
          if (pos < cap) {
            cand_val[pos] = val[r][j];
            cand_idx[pos] = static_cast<int32_t>(g * 4 + j);
          }
          ++pos;
        }
      }
      round_off += (tot >> (16 * r)) & 0xffffu;
    }
  }
  if (nan_flag != nullptr && nan) *nan_flag = 1u;
}

// S2's last step: positions in the candidate list -> indices, and the residual zeroed there.
__global__ void __launch_bounds__(kThreads)
sp_map(const State* exact_st, int64_t k, const int32_t* pos, const int32_t* cand_idx,
       int32_t* out_indices, float* residual) {
  if (exact_st->skip) return;
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < k;
       i += int64_t{gridDim.x} * kThreads) {
    const int32_t idx = cand_idx[pos[i]];
    out_indices[i] = idx;
    residual[idx] = 0.0f;
  }
}

// ---------------------------------------------------------------------------------------------
__global__ void __launch_bounds__(kThreads)
k_plain_add(const float* a, const float* b, float* out, int64_t n, bool aligned) {
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  const int64_t t0 = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (aligned) {
    const int64_t n4 = n / 4;
    for (int64_t g = t0; g < n4; g += stride) {
      const float4 x = reinterpret_cast<const float4*>(a)[g];
      const float4 y = reinterpret_cast<const float4*>(b)[g];
      reinterpret_cast<float4*>(out)[g] =
          make_float4(__fadd_rn(x.x, y.x), __fadd_rn(x.y, y.y), __fadd_rn(x.z, y.z),
                      __fadd_rn(x.w, y.w));
    }
    for (int64_t i = n4 * 4 + t0; i < n; i += stride) out[i] = __fadd_rn(a[i], b[i]);
  } else {
    for (int64_t i = t0; i < n; i += stride) out[i] = __fadd_rn(a[i], b[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.
//
// Every kernel launch and memset goes through launch() / memset_async() below: the launch is
// checked against the device limits (launch_check.h) before it is made, a refused or failed
// launch leaves a one-line description naming the kernel in last_error_detail(), and with
// tracing on (set_trace) each call is written to the trace file before and after it is made,
// so that under CUDA_LAUNCH_BLOCKING=1 the last line of a hung run names the call that hung.

std::atomic<std::FILE*> g_trace{nullptr};
thread_local std::string t_detail;  // the last failure of this thread, for last_error_detail()

__attribute__((format(printf, 1, 2))) void trace(const char* fmt, ...) {
  std::FILE* f = g_trace.load(std::memory_order_relaxed);
  if (f == nullptr) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::fprintf(f, "cddp-cuda: %s\n", line);
  std::fflush(f);  // the line must be out before the call that may hang
}

cudaError_t fail(cudaError_t e, std::string why) {
  trace("error: %s", why.c_str());
  t_detail = std::move(why);
  return e;
}

// The device's SM count and limits (the stated DeviceLimits lowered to what it reports),
// cached per device. Under the emulator: the emulator's settable ones, never cached.
struct DeviceInfo {
  int sms = 132;
  DeviceLimits lim;
};

#if defined(CDDP_CUDA_EMULATION)
DeviceInfo device_info() {
  DeviceInfo d;
  d.sms = ::cudaemu::sm_count();
  const ::cudaemu::Limits& e = ::cudaemu::limits();
  DeviceLimits dev;
  dev.max_threads_per_block = e.max_threads_per_block;
  dev.max_grid_x = e.max_grid_x;
  d.lim = tighter(DeviceLimits{}, dev);
  return d;
}
#else
DeviceInfo device_info() {
  static std::mutex mu;
  static DeviceInfo cache[64];
  static bool known[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
  std::lock_guard<std::mutex> lock(mu);
  if (dev >= 0 && dev < 64 && known[dev]) return cache[dev];
  DeviceInfo d;
  DeviceLimits q;
  int v = 0;
  auto get = [&](cudaDeviceAttr a, int64_t& out) {
    if (dev >= 0 && cudaDeviceGetAttribute(&v, a, dev) == cudaSuccess && v > 0) out = v;
  };
  int64_t sms = 0, warp = 32;
  get(cudaDevAttrMultiProcessorCount, sms);
  get(cudaDevAttrMaxThreadsPerBlock, q.max_threads_per_block);
  get(cudaDevAttrMaxGridDimX, q.max_grid_x);
  get(cudaDevAttrMaxGridDimY, q.max_grid_y);
  get(cudaDevAttrMaxGridDimZ, q.max_grid_z);
  get(cudaDevAttrMaxSharedMemoryPerBlock, q.max_smem_per_block);
  get(cudaDevAttrWarpSize, warp);
  (void)cudaGetLastError();  // an attribute this driver does not know is not our failure
  if (sms > 0) d.sms = static_cast<int>(sms);
  d.lim = tighter(DeviceLimits{}, q);
  if (warp != 32) d.lim.max_threads_per_block = 0;  // refuse: every kernel assumes 32 lanes
  if (dev >= 0 && dev < 64) {
    cache[dev] = d;
    known[dev] = true;
  }
  trace("device %d: %d SMs, max %lld threads/block, grid.x <= %lld, %lld B shared/block", dev,
        d.sms, static_cast<long long>(d.lim.max_threads_per_block),
        static_cast<long long>(d.lim.max_grid_x),
        static_cast<long long>(d.lim.max_smem_per_block));
  return d;
}

// cudaFuncGetAttributes of a kernel (its static shared memory and the most threads per block
// its registers allow), cached per kernel.
struct FuncInfo {
  int64_t static_smem = 0;
  int64_t max_threads = 0;
};
FuncInfo func_info(const void* fn) {
  static std::mutex mu;
  static std::vector<std::pair<const void*, FuncInfo>> cache;
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& [f, info] : cache)
    if (f == fn) return info;
  FuncInfo info;
  cudaFuncAttributes a{};
  if (cudaFuncGetAttributes(&a, fn) == cudaSuccess) {
    info.static_smem = static_cast<int64_t>(a.sharedSizeBytes);
    info.max_threads = a.maxThreadsPerBlock;
  } else {
    (void)cudaGetLastError();  // the launch itself will report what is wrong
  }
  cache.emplace_back(fn, info);
  return info;
}
#endif

// Declared static shared memory of each kernel (upper bounds; on a GPU the larger of this and
// what cudaFuncGetAttributes reports is checked): the histogram, the scan's per-warp sums for
// both types it is used with, and arrive_last's flag.
constexpr int64_t kScanSmem = int64_t{kWarps} * (4 + 8) + 16;
constexpr int64_t kSmemK0 = kBins0 * 4 + kScanSmem;
constexpr int64_t kSmemK1 = kBins1 * 4 + kScanSmem;
constexpr int64_t kSmemK2 = kBins2 * 4 + kScanSmem;
constexpr int64_t kSmemK3 = kScanSmem;
constexpr int64_t kSmemK4 = kScanSmem;
static_assert(kSmemK0 <= 48 * 1024 && kSmemK1 <= 48 * 1024, "static shared memory over 48 KiB");

// Grid of the grid-stride kernels: enough blocks for the work, at most kBlocksPerSM per SM
// (they loop), never more than the device's gridDim.x.
int64_t stream_grid(const DeviceInfo& d, int64_t work_items) {
  const int64_t want = std::max<int64_t>(1, (work_items + kThreads - 1) / kThreads);
  return std::min({want, int64_t{d.sms} * kBlocksPerSM, d.lim.max_grid_x});
}
int64_t tile_grid(const DeviceInfo& d, int64_t num_tiles, bool per_sm_cap) {
  const int64_t cap = per_sm_cap ? std::min(int64_t{d.sms} * kBlocksPerSM, d.lim.max_grid_x)
                                 : d.lim.max_grid_x;
  return std::max<int64_t>(1, std::min(num_tiles, cap));
}

struct Launcher {
  DeviceInfo dev;
  cudaStream_t stream;
};

// The one launch path: kThreads threads per block, no dynamic shared memory, checked first.
// Under CDDP_CUDA_EMULATION (tests/gpu/*_emu_test.cpp) the same kernels run on CPU fibers.
template <typename... P, typename... A>
cudaError_t launch(const Launcher& L, const char* name, const char* variant, void (*kernel)(P...),
                   int64_t grid, int64_t declared_smem, const A&... args) {
  char label[96];
  std::snprintf(label, sizeof label, "%s<%s>", name, variant);
  LaunchConfig c;
  c.kernel = label;
  c.grid_x = grid;
  c.block_x = kThreads;
  c.static_smem = declared_smem;
#if !defined(CDDP_CUDA_EMULATION)
  const FuncInfo fi = func_info(reinterpret_cast<const void*>(kernel));
  c.static_smem = std::max(declared_smem, fi.static_smem);
  c.kernel_max_threads = fi.max_threads;
#endif
  std::string why = launch_config_error(c, L.dev.lim);
  if (!why.empty()) return fail(cudaErrorInvalidConfiguration, "refused launch: " + why);
  trace("> %s grid=%lld block=%d smem=%lld stream=%p", label, static_cast<long long>(grid),
        kThreads, static_cast<long long>(c.static_smem), static_cast<void*>(L.stream));
#if defined(CDDP_CUDA_EMULATION)
  const cudaError_t e =
      ::cudaemu::launch(static_cast<unsigned int>(grid), kThreads, [&] { kernel(args...); });
#else
  kernel<<<static_cast<unsigned int>(grid), kThreads, 0, L.stream>>>(args...);
  const cudaError_t e = cudaGetLastError();
#endif
  trace("< %s: %s", label, cudaGetErrorString(e));
  if (e != cudaSuccess)
    return fail(e, std::string("launch of ") + label + " (grid " + std::to_string(grid) +
                       ", block " + std::to_string(kThreads) + "): " + cudaGetErrorString(e));
  return cudaSuccess;
}

cudaError_t memset_async(const Launcher& L, void* p, size_t bytes, const char* what) {
  trace("> cudaMemsetAsync(%s, %zu bytes) stream=%p", what, bytes, static_cast<void*>(L.stream));
  const cudaError_t e = cudaMemsetAsync(p, 0, bytes, L.stream);
  trace("< cudaMemsetAsync(%s): %s", what, cudaGetErrorString(e));
  if (e != cudaSuccess)
    return fail(e, std::string("cudaMemsetAsync(") + what + ", " + std::to_string(bytes) +
                       " bytes): " + cudaGetErrorString(e));
  return cudaSuccess;
}

#define CDDP_TRY(call)                                  \
  do {                                                  \
    if (const cudaError_t e_ = (call); e_ != cudaSuccess) \
      return e_;                                        \
  } while (0)

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T>
T* at_offset(void* base, size_t off) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + off);
}

// The passes K1..K4 over a read-only source (acc for top-k, Philox for random-k).
template <class Src, typename IdxT, bool kZeroResidual>
cudaError_t run_select_tail(const Launcher& L, int stages, const Src& src, int64_t n,
                            const Layout& l, void* ws, float* out_values, IdxT* out_indices,
                            float* residual) {
  State* st = at_offset<State>(ws, l.state);
  auto* hist = at_offset<unsigned long long>(ws, l.hist);
  auto* tile_gt = at_offset<unsigned int>(ws, l.tile_gt);
  auto* tile_eq = at_offset<unsigned int>(ws, l.tile_eq);
  auto* tile_off = at_offset<unsigned long long>(ws, l.tile_off);
  auto* tile_eqb = at_offset<unsigned long long>(ws, l.tile_eqb);
  auto* cand_key = at_offset<unsigned int>(ws, l.cand_key);
  auto* cand_idx = at_offset<IdxT>(ws, l.cand_idx);
  const int64_t ngroups = (n + 3) / 4;
  const int64_t g1 = tile_grid(L.dev, l.num_tiles, true);
  if (stages < 2) return cudaSuccess;
  CDDP_TRY(launch(L, "k1_hist", Src::kName, &k1_hist<Src, IdxT>, g1, kSmemK1, src, n, l.num_tiles,
                  st, hist, tile_gt, tile_eq, cand_key, cand_idx, l.cand_cap));
  // K2/K3 grids are sized for the worst case (overflow: the whole array); in the usual
  // candidate mode the surplus blocks find no work and only take part in the last-block count.
  if (stages < 3) return cudaSuccess;
  CDDP_TRY(launch(L, "k2_hist", Src::kName, &k2_hist<Src, IdxT>, stream_grid(L.dev, ngroups),
                  kSmemK2, src, n, st, hist, cand_key, l.cand_cap));
  if (stages < 4) return cudaSuccess;
  CDDP_TRY(launch(L, "k3_tiles", Src::kName, &k3_tiles<Src, IdxT>, g1, kSmemK3, src, n,
                  l.num_tiles, st, tile_gt, tile_eq, tile_off, tile_eqb, cand_key, cand_idx,
                  l.cand_cap));
  if (stages < 5) return cudaSuccess;
  return launch(L, "k4_compact", Src::kName, &k4_compact<Src, IdxT, kZeroResidual>,
                tile_grid(L.dev, l.num_tiles, false), kSmemK4, src, n, l.num_tiles, st, tile_off,
                tile_eqb, out_values, out_indices, residual);
}

template <class Src>
cudaError_t launch_k0(const Launcher& L, const Src& src, int64_t n, int64_t k, State* st,
                      unsigned long long* hist, unsigned int* nan_flag) {
  return launch(L, "k0_hist", Src::kName, &k0_hist<Src>, stream_grid(L.dev, (n + 3) / 4), kSmemK0,
                src, n, static_cast<unsigned long long>(k), st, hist, nan_flag);
}

template <typename IdxT>
cudaError_t topk_impl(const Launcher& L, int stages, const float* grad, float* residual,
                      int64_t n, int64_t k, float* out_values, IdxT* out_indices,
                      unsigned int* nan_flag, void* ws, const Layout& l) {
  State* st = at_offset<State>(ws, l.state);
  auto* hist = at_offset<unsigned long long>(ws, l.hist);
  const bool al = aligned16(grad) && (residual == nullptr || aligned16(residual));
  if (residual != nullptr) {
    CDDP_TRY(al ? launch_k0(L, FusedSrc<true>{grad, residual, n}, n, k, st, hist, nan_flag)
                : launch_k0(L, FusedSrc<false>{grad, residual, n}, n, k, st, hist, nan_flag));
  } else {
    CDDP_TRY(al ? launch_k0(L, ReadSrc<true>{grad, n}, n, k, st, hist, nan_flag)
                : launch_k0(L, ReadSrc<false>{grad, n}, n, k, st, hist, nan_flag));
  }
  const float* acc = residual != nullptr ? residual : grad;
  if (residual != nullptr) {
    if (al)
      return run_select_tail<ReadSrc<true>, IdxT, true>(L, stages, ReadSrc<true>{acc, n}, n, l, ws,
                                                        out_values, out_indices, residual);
    return run_select_tail<ReadSrc<false>, IdxT, true>(L, stages, ReadSrc<false>{acc, n}, n, l, ws,
                                                       out_values, out_indices, residual);
  }
  if (al)
    return run_select_tail<ReadSrc<true>, IdxT, false>(L, stages, ReadSrc<true>{acc, n}, n, l, ws,
                                                       out_values, out_indices, nullptr);
  return run_select_tail<ReadSrc<false>, IdxT, false>(L, stages, ReadSrc<false>{acc, n}, n, l, ws,
                                                      out_values, out_indices, nullptr);
}

template <typename IdxT>
cudaError_t randomk_impl(const Launcher& L, uint64_t seed, int64_t step, int64_t param_index,
                         int64_t n, int64_t k, IdxT* out_indices, void* ws, const Layout& l) {
  State* st = at_offset<State>(ws, l.state);
  auto* hist = at_offset<unsigned long long>(ws, l.hist);
  const RandkSrc src{seed, step, param_index, n};
  CDDP_TRY(launch_k0(L, src, n, k, st, hist, nullptr));
  return run_select_tail<RandkSrc, IdxT, false>(L, 5, src, n, l, ws, nullptr, out_indices, nullptr);
}

// The launchers report launch failures through cudaGetLastError(), which returns (and clears)
// the last error of ANY runtime call on this thread. A non-sticky error left behind by someone
// else (a LibTorch call, or cudart unregistering the fatbinary of a dlclose'd plugin .so that
// carried these same kernels) would otherwise surface here as "invalid argument" from
// perfectly valid launches. Consume it on entry, and say so in the trace: such an error is a
// clue to the caller's bug. A sticky error still fails the memset / the launches themselves.
void clear_stale_error(const char* entry) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    trace("%s: cleared a stale error left by an earlier CUDA call (not ours): %s", entry,
          cudaGetErrorString(e));
}

// Workspace of the single-pass design. One memset clears everything from the start to the
// end of the multi-pass tail's state: SpState, the look-back status, the sample's state, the
// candidate values (their +0.0 padding), the exact tail's layout and the full tail's state.
constexpr int64_t kSampleSize = 8192;

struct SpLayout {
  size_t sp, status, sample, cand_val, exact, full, cand_idx, pos, zero_bytes, total;
  int64_t num_tiles, m, q;
  unsigned long long cap;
  Layout sample_l, exact_l, full_l;
};

SpLayout make_sp_layout(int64_t n, int64_t k) {
  SpLayout s{};
  s.num_tiles = std::max<int64_t>(1, (n + kTileElems - 1) / kTileElems);
  s.m = std::min<int64_t>(n, kSampleSize);
  if (s.m == n) {
    s.q = k;  // the sample is the array: the bucket of the k-th largest key, exactly
  } else {
    // m*k/n expected in the sample above the k-th largest key; 4 standard deviations and 8 more
    // make a sample that puts fewer than k elements of the array above lo very unlikely.
    const double mp = static_cast<double>(s.m) * static_cast<double>(k) / static_cast<double>(n);
    s.q = std::min<int64_t>(s.m, static_cast<int64_t>(mp + 4.0 * std::sqrt(mp) + 8.0) + 1);
  }
  s.cap = static_cast<unsigned long long>(std::min<int64_t>(n, 4 * k + 8192));
  s.sample_l = make_layout(s.m, false);
  s.exact_l = make_layout(static_cast<int64_t>(s.cap), false);
  s.full_l = make_layout(n, false);
  size_t off = 0;
  s.sp = off;       off += align256(sizeof(SpState));
  s.status = off;   off += align256(sizeof(unsigned long long) * s.num_tiles);
  s.sample = off;   off += align256(s.sample_l.total);
  s.cand_val = off; off += align256(sizeof(float) * s.cap);
  s.exact = off;    off += align256(s.exact_l.total);
  s.full = off;     off += align256(s.full_l.total);
  s.zero_bytes = s.full + s.full_l.tile_gt;
  s.cand_idx = off; off += align256(sizeof(int32_t) * s.cap);
  s.pos = off;      off += align256(sizeof(int32_t) * static_cast<size_t>(k));
  s.total = off;
  return s;
}

// 0 <= k <= n; indices wide enough; workspace big enough and 16-byte aligned when work is
// to be done (k >= 1).
cudaError_t check_args(const char* who, int64_t n, int64_t k, bool idx64, void* ws,
                       size_t ws_size) {
  if (n < 0 || k < 0 || k > n)
    return fail(cudaErrorInvalidValue, std::string(who) + ": k = " + std::to_string(k) +
                                           " out of range [0, n = " + std::to_string(n) + "]");
  if (!idx64 && needs_int64_indices(n))
    return fail(cudaErrorInvalidValue, std::string(who) + ": n = " + std::to_string(n) +
                                           " needs int64 indices");
  if (k == 0) return cudaSuccess;
  const size_t need = make_layout(n, idx64).total;
  if (ws == nullptr || ws_size < need)
    return fail(cudaErrorInvalidValue, std::string(who) + ": workspace of " +
                                           std::to_string(ws_size) + " bytes, " +
                                           std::to_string(need) + " needed");
  if (!aligned16(ws))
    return fail(cudaErrorInvalidValue, std::string(who) + ": workspace not 16-byte aligned");
  return cudaSuccess;
}

}  // namespace

void set_trace(std::FILE* sink) { g_trace.store(sink, std::memory_order_relaxed); }

const char* last_error_detail() { return t_detail.c_str(); }

size_t workspace_bytes(int64_t n, bool indices_int64) {
  return make_layout(std::max<int64_t>(n, 1), indices_int64).total;
}

cudaError_t launch_topk(const float* grad, float* residual, int64_t n, int64_t k, float* out_values,
                        void* out_indices, bool indices_int64, unsigned int* nan_flag,
                        void* workspace, size_t workspace_size, cudaStream_t stream) {
  return launch_topk_stages(5, grad, residual, n, k, out_values, out_indices, indices_int64,
                            nan_flag, workspace, workspace_size, stream);
}

cudaError_t launch_topk_stages(int stages, const float* grad, float* residual, int64_t n, int64_t k,
                               float* out_values, void* out_indices, bool indices_int64,
                               unsigned int* nan_flag, void* workspace, size_t workspace_size,
                               cudaStream_t stream) {
  t_detail.clear();
  CDDP_TRY(check_args("launch_topk", n, k, indices_int64, workspace, workspace_size));
  clear_stale_error("launch_topk");
  trace("launch_topk n=%lld k=%lld residual=%d idx64=%d stages=%d", static_cast<long long>(n),
        static_cast<long long>(k), residual != nullptr, indices_int64, stages);
  if (n == 0) return cudaSuccess;
  if (grad == nullptr) return fail(cudaErrorInvalidValue, "launch_topk: grad is null");
  const Launcher L{device_info(), stream};
  if (k == 0) {
    // Nothing is selected: residual = acc = grad + residual, one rounding, the same add as
    // K0's. No grid, no workspace and no output is needed, so none is asked for (a k = 0
    // launch of the selection would otherwise be a zero-sized output and a pointless pass).
    // NaN is not flagged on this path.
    if (residual == nullptr || stages < 1) return cudaSuccess;
    const bool al = aligned16(grad) && aligned16(residual);
    return launch(L, "k_plain_add", "ef,k=0", &k_plain_add, stream_grid(L.dev, (n + 3) / 4), 0,
                  grad, static_cast<const float*>(residual), residual, n, al);
  }
  if (out_values == nullptr || out_indices == nullptr)
    return fail(cudaErrorInvalidValue, "launch_topk: output pointer is null");
  const Layout l = make_layout(n, indices_int64);
  // Zero the state and the histogram; the tile arrays are initialised by K1.
  CDDP_TRY(memset_async(L, workspace, l.tile_gt, "topk state+histogram"));
  if (stages < 1) return cudaSuccess;
  if (indices_int64)
    return topk_impl<int64_t>(L, stages, grad, residual, n, k, out_values,
                              static_cast<int64_t*>(out_indices), nan_flag, workspace, l);
  return topk_impl<int32_t>(L, stages, grad, residual, n, k, out_values,
                            static_cast<int32_t*>(out_indices), nan_flag, workspace, l);
}

size_t workspace_bytes_single_pass(int64_t n, int64_t k, bool indices_int64) {
  const size_t multi = workspace_bytes(n, indices_int64);
  if (indices_int64 || n < 1 || k < 1 || k > n) return multi;
  return std::max(multi, make_sp_layout(n, k).total);
}

cudaError_t launch_topk_single_pass(const float* grad, float* residual, int64_t n, int64_t k,
                                    float* out_values, void* out_indices, bool indices_int64,
                                    unsigned int* nan_flag, void* workspace,
                                    size_t workspace_size, cudaStream_t stream) {
  // Outside the design (no residual to fuse, int64 indices, nothing to select): the multi-pass.
  if (residual == nullptr || indices_int64 || k < 1 || n < 1 || k > n)
    return launch_topk(grad, residual, n, k, out_values, out_indices, indices_int64, nan_flag,
                       workspace, workspace_size, stream);
  t_detail.clear();
  CDDP_TRY(check_args("launch_topk_single_pass", n, k, false, workspace, workspace_size));
  const SpLayout sl = make_sp_layout(n, k);
  if (workspace_size < sl.total)
    return fail(cudaErrorInvalidValue, "launch_topk_single_pass: workspace of " +
                                           std::to_string(workspace_size) + " bytes, " +
                                           std::to_string(sl.total) + " needed");
  if (grad == nullptr || out_values == nullptr || out_indices == nullptr)
    return fail(cudaErrorInvalidValue, "launch_topk_single_pass: null pointer");
  clear_stale_error("launch_topk_single_pass");
  trace("launch_topk_single_pass n=%lld k=%lld sample=%lld q=%lld cap=%llu",
        static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(sl.m),
        static_cast<long long>(sl.q), sl.cap);
  const Launcher L{device_info(), stream};
  void* ws = workspace;
  auto* sp = at_offset<SpState>(ws, sl.sp);
  auto* status = at_offset<unsigned long long>(ws, sl.status);
  void* sample_ws = at_offset<unsigned char>(ws, sl.sample);
  void* exact_ws = at_offset<unsigned char>(ws, sl.exact);
  void* full_ws = at_offset<unsigned char>(ws, sl.full);
  State* sample_st = at_offset<State>(sample_ws, sl.sample_l.state);
  State* exact_st = at_offset<State>(exact_ws, sl.exact_l.state);
  State* full_st = at_offset<State>(full_ws, sl.full_l.state);
  auto* cand_val = at_offset<float>(ws, sl.cand_val);
  auto* cand_idx = at_offset<int32_t>(ws, sl.cand_idx);
  auto* pos = at_offset<int32_t>(ws, sl.pos);
  auto* idx_out = static_cast<int32_t*>(out_indices);
  const bool al = aligned16(grad) && aligned16(residual);

  CDDP_TRY(memset_async(L, ws, sl.zero_bytes, "single-pass state+status+candidates"));
  // S0: the sample's bucket.
  CDDP_TRY(launch_k0(L, SampleSrc{grad, residual, n, sl.m}, sl.m, sl.q, sample_st,
                     at_offset<unsigned long long>(sample_ws, sl.sample_l.hist), nullptr));
  // S1: the one pass.
  const int64_t g1 = tile_grid(L.dev, sl.num_tiles, true);
  const auto kk = static_cast<unsigned long long>(k);
  if (al)
    CDDP_TRY(launch(L, "sp1_filter", "fused", &sp1_filter<true>, g1, kScanSmem + 16,
                    FusedSrc<true>{grad, residual, n}, n, sl.num_tiles,
                    static_cast<const State*>(sample_st), sp, status, cand_val, cand_idx, sl.cap,
                    kk, exact_st, full_st, nan_flag));
  else
    CDDP_TRY(launch(L, "sp1_filter", "fused,unaligned", &sp1_filter<false>, g1, kScanSmem + 16,
                    FusedSrc<false>{grad, residual, n}, n, sl.num_tiles,
                    static_cast<const State*>(sample_st), sp, status, cand_val, cand_idx, sl.cap,
                    kk, exact_st, full_st, nan_flag));
  // S2, exact over the candidate list (skipped on the device unless k <= C <= cap).
  const int64_t cap = static_cast<int64_t>(sl.cap);
  const ReadSrc<true> list{cand_val, cap};  // cand_val is 256-byte aligned
  CDDP_TRY(launch_k0(L, list, cap, k, exact_st,
                     at_offset<unsigned long long>(exact_ws, sl.exact_l.hist), nullptr));
  CDDP_TRY((run_select_tail<ReadSrc<true>, int32_t, false>(L, 5, list, cap, sl.exact_l, exact_ws,
                                                           out_values, pos, nullptr)));
  CDDP_TRY(launch(L, "sp_map", "exact", &sp_map, stream_grid(L.dev, k), 0,
                  static_cast<const State*>(exact_st), k, static_cast<const int32_t*>(pos),
                  static_cast<const int32_t*>(cand_idx), idx_out, residual));
  // S2, otherwise: the multi-pass over acc, now in the residual (skipped unless needed).
  State* fst = full_st;
  auto* fhist = at_offset<unsigned long long>(full_ws, sl.full_l.hist);
  if (al) {
    CDDP_TRY(launch_k0(L, ReadSrc<true>{residual, n}, n, k, fst, fhist, nullptr));
    return run_select_tail<ReadSrc<true>, int32_t, true>(L, 5, ReadSrc<true>{residual, n}, n,
                                                         sl.full_l, full_ws, out_values, idx_out,
                                                         residual);
  }
  CDDP_TRY(launch_k0(L, ReadSrc<false>{residual, n}, n, k, fst, fhist, nullptr));
  return run_select_tail<ReadSrc<false>, int32_t, true>(L, 5, ReadSrc<false>{residual, n}, n,
                                                        sl.full_l, full_ws, out_values, idx_out,
                                                        residual);
}

#if defined(CDDP_CUDA_EMULATION)
int single_pass_tail_for_tests(const void* workspace, int64_t n, int64_t k) {
  const SpLayout sl = make_sp_layout(n, k);
  const auto* exact_st = reinterpret_cast<const State*>(static_cast<const unsigned char*>(workspace) +
                                                        sl.exact + sl.exact_l.state);
  return exact_st->skip ? 2 : 1;
}
#endif

cudaError_t launch_randomk(uint64_t seed, int64_t step, int64_t param_index, int64_t n, int64_t k,
                           void* out_indices, bool indices_int64, void* workspace,
                           size_t workspace_size, cudaStream_t stream) {
  t_detail.clear();
  CDDP_TRY(check_args("launch_randomk", n, k, indices_int64, workspace, workspace_size));
  clear_stale_error("launch_randomk");
  trace("launch_randomk n=%lld k=%lld step=%lld param=%lld idx64=%d", static_cast<long long>(n),
        static_cast<long long>(k), static_cast<long long>(step),
        static_cast<long long>(param_index), indices_int64);
  if (k == 0) return cudaSuccess;  // nothing to select, nothing launched
  if (out_indices == nullptr) return fail(cudaErrorInvalidValue, "launch_randomk: output is null");
  const Launcher L{device_info(), stream};
  const Layout l = make_layout(n, indices_int64);
  CDDP_TRY(memset_async(L, workspace, l.tile_gt, "randomk state+histogram"));
  if (indices_int64)
    return randomk_impl<int64_t>(L, seed, step, param_index, n, k,
                                 static_cast<int64_t*>(out_indices), workspace, l);
  return randomk_impl<int32_t>(L, seed, step, param_index, n, k,
                               static_cast<int32_t*>(out_indices), workspace, l);
}

cudaError_t launch_plain_add(const float* a, const float* b, float* out, int64_t n,
                             cudaStream_t stream) {
  t_detail.clear();
  if (n <= 0) return cudaSuccess;
  clear_stale_error("launch_plain_add");
  const Launcher L{device_info(), stream};
  const bool al = aligned16(a) && aligned16(b) && aligned16(out);
  return launch(L, "k_plain_add", al ? "float4" : "scalar", &k_plain_add,
                stream_grid(L.dev, (n + 3) / 4), 0, a, b, out, n, al);
}

}  // namespace cddp::topk_cuda
