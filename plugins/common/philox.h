// philox.h — Philox4x32-10, the counter-based generator of Salmon et al., "Parallel Random
// Numbers: As Easy as 1, 2, 3" (SC'11). Header-only and usable from host and CUDA device
// code, so that the CPU and GPU random-k plugins draw bit-identical numbers.
//
// random-k uses it to give every element i of a tensor a 32-bit priority that depends only on
// (seed, step, parameter index, i); the k smallest priorities (ties: lower index) are the
// selection. Every rank, thread count and device therefore selects the same indices.
// It will not provide streams, distributions or state: just the pure function.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CDDP_HD __host__ __device__ __forceinline__
#else
#define CDDP_HD inline
#endif

namespace cddp::philox {

struct Key { uint32_t k0, k1; };
struct Block { uint32_t c[4]; };

CDDP_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter `c` under key `k`.
CDDP_HD Block philox4x32_10(Block c, Key k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(M0, c.c[0], hi0, lo0);
    mulhilo(M1, c.c[2], hi1, lo1);
    Block n;
    n.c[0] = hi1 ^ c.c[1] ^ k.k0;
    n.c[1] = lo1;
    n.c[2] = hi0 ^ c.c[3] ^ k.k1;
    n.c[3] = lo0;
    c = n;
    k.k0 += W0;
    k.k1 += W1;
  }
  return c;
}

// The key and counter layout random-k uses. Element i lives in block i/4, lane i%4.
CDDP_HD Key randomk_key(uint64_t seed) {
  return Key{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}
CDDP_HD Block randomk_counter(uint64_t block, int64_t step, int64_t param_index) {
  return Block{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                static_cast<uint32_t>(step), static_cast<uint32_t>(param_index)}};
}

}  // namespace cddp::philox
