// philox_lanes.cpp — Philox4x32-10 over many blocks: portable, AVX2 and AVX-512F paths.
//
// The vector paths keep one block per 64-bit lane, its 32-bit counter words in the low half:
// _mm*_mul_epu32 multiplies exactly those low halves into the full 64-bit product, whose low
// half is Philox's `lo` and whose high half (a 32-bit shift) is `hi` (Salmon et al., SC'11,
// Philox4x32: c0' = hi(M1·c2) ^ c1 ^ k0, c1' = lo(M1·c2), c2' = hi(M0·c0) ^ c3 ^ k1, c3' = lo(M0·c0)).
// A `lo` kept as the whole product carries garbage in its high half; it is only ever XORed or
// multiplied (mul_epu32 reads the low half), so it never reaches the low half, and the store
// keeps the low halves alone. Four vectors run side by side to hide the multiplier's latency.
#include "philox_lanes.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CDDP_PHILOX_X86 1
#else
#define CDDP_PHILOX_X86 0
#endif

namespace cddp::philox {

namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

// Blocks [j0, j1) of the call, written with row stride `stride` (the call's block count).
void portable_range(Key key, uint64_t block0, int64_t step, int64_t param, int j0, int j1, int stride,
                    uint32_t* out) {
  for (int j = j0; j < j1; ++j) {
    const Block b = philox4x32_10(randomk_counter(block0 + uint64_t(j), step, param), key);
    for (int l = 0; l < 4; ++l) out[l * stride + j] = b.c[l];
  }
}

// The vector paths add j to the low counter word in 64-bit lanes: they need no carry into the
// high word over the whole call.
bool low_word_carries(uint64_t block0, int blocks) {
  return blocks > 0 && uint64_t(uint32_t(block0)) + uint64_t(blocks - 1) > 0xFFFFFFFFull;
}

#if CDDP_PHILOX_X86
bool cpu_has_avx2() {
  __builtin_cpu_init();  // may run before libgcc's own constructor has
  return __builtin_cpu_supports("avx2");
}
bool cpu_has_avx512f() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

__attribute__((target("avx2"))) void avx2_range(Key key, uint64_t block0, int64_t step, int64_t param, int blocks,
                                                uint32_t* out) {
  constexpr int kVec = 4, kLanes = 4;  // 4 vectors of 4 blocks
  const __m256i m0 = _mm256_set1_epi64x(kM0), m1 = _mm256_set1_epi64x(kM1);
  const __m256i iota = _mm256_setr_epi64x(0, 1, 2, 3);
  const __m256i hi_word = _mm256_set1_epi64x(int64_t(uint32_t(block0 >> 32)));
  const __m256i c2 = _mm256_set1_epi64x(int64_t(uint32_t(step))), c3 = _mm256_set1_epi64x(int64_t(uint32_t(param)));
  const __m256i low_halves = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const uint32_t lo0 = uint32_t(block0);
  int j = 0;
  for (; j + kVec * kLanes <= blocks; j += kVec * kLanes) {
    __m256i x0[kVec], x1[kVec], x2[kVec], x3[kVec];
    for (int v = 0; v < kVec; ++v) {
      x0[v] = _mm256_add_epi64(_mm256_set1_epi64x(int64_t(lo0 + uint32_t(j + kLanes * v))), iota);
      x1[v] = hi_word, x2[v] = c2, x3[v] = c3;
    }
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int round = 0; round < 10; ++round) {
      const __m256i kv0 = _mm256_set1_epi64x(int64_t(k0)), kv1 = _mm256_set1_epi64x(int64_t(k1));
      for (int v = 0; v < kVec; ++v) {
        const __m256i p0 = _mm256_mul_epu32(x0[v], m0), p1 = _mm256_mul_epu32(x2[v], m1);
        x0[v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), x1[v]), kv0);
        x2[v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), x3[v]), kv1);
        x1[v] = p1, x3[v] = p0;
      }
      k0 += kW0, k1 += kW1;
    }
    for (int v = 0; v < kVec; ++v) {
      const __m256i* lanes[4] = {&x0[v], &x1[v], &x2[v], &x3[v]};
      for (int l = 0; l < 4; ++l)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + l * blocks + j + kLanes * v),
                         _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(*lanes[l], low_halves)));
    }
  }
  portable_range(key, block0, step, param, j, blocks, blocks, out);
}

__attribute__((target("avx512f"))) void avx512_range(Key key, uint64_t block0, int64_t step, int64_t param,
                                                     int blocks, uint32_t* out) {
  constexpr int kVec = 4, kLanes = 8;  // 4 vectors of 8 blocks
  const __m512i m0 = _mm512_set1_epi64(kM0), m1 = _mm512_set1_epi64(kM1);
  const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i hi_word = _mm512_set1_epi64(int64_t(uint32_t(block0 >> 32)));
  const __m512i c2 = _mm512_set1_epi64(int64_t(uint32_t(step))), c3 = _mm512_set1_epi64(int64_t(uint32_t(param)));
  const uint32_t lo0 = uint32_t(block0);
  int j = 0;
  for (; j + kVec * kLanes <= blocks; j += kVec * kLanes) {
    __m512i x0[kVec], x1[kVec], x2[kVec], x3[kVec];
    for (int v = 0; v < kVec; ++v) {
      x0[v] = _mm512_add_epi64(_mm512_set1_epi64(int64_t(lo0 + uint32_t(j + kLanes * v))), iota);
      x1[v] = hi_word, x2[v] = c2, x3[v] = c3;
    }
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int round = 0; round < 10; ++round) {
      const __m512i kv0 = _mm512_set1_epi64(int64_t(k0)), kv1 = _mm512_set1_epi64(int64_t(k1));
      for (int v = 0; v < kVec; ++v) {
        const __m512i p0 = _mm512_mul_epu32(x0[v], m0), p1 = _mm512_mul_epu32(x2[v], m1);
        x0[v] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), x1[v], kv0, 0x96);  // a ^ b ^ c
        x2[v] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), x3[v], kv1, 0x96);
        x1[v] = p1, x3[v] = p0;
      }
      k0 += kW0, k1 += kW1;
    }
    for (int v = 0; v < kVec; ++v) {
      const __m512i* lanes[4] = {&x0[v], &x1[v], &x2[v], &x3[v]};
      for (int l = 0; l < 4; ++l)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + l * blocks + j + kLanes * v),
                            _mm512_cvtepi64_epi32(*lanes[l]));
    }
  }
  portable_range(key, block0, step, param, j, blocks, blocks, out);
}
#endif

}  // namespace

void fill_lanes_portable(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out) {
  portable_range(key, block0, step, param, 0, blocks, blocks, out);
}

bool fill_lanes_avx2(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out) {
#if CDDP_PHILOX_X86
  static const bool has = cpu_has_avx2();
  if (!has) return false;
  if (low_word_carries(block0, blocks)) fill_lanes_portable(key, block0, step, param, blocks, out);
  else avx2_range(key, block0, step, param, blocks, out);
  return true;
#else
  (void)key, (void)block0, (void)step, (void)param, (void)blocks, (void)out;
  return false;
#endif
}

bool fill_lanes_avx512(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out) {
#if CDDP_PHILOX_X86
  static const bool has = cpu_has_avx512f();
  if (!has) return false;
  if (low_word_carries(block0, blocks)) fill_lanes_portable(key, block0, step, param, blocks, out);
  else avx512_range(key, block0, step, param, blocks, out);
  return true;
#else
  (void)key, (void)block0, (void)step, (void)param, (void)blocks, (void)out;
  return false;
#endif
}

void fill_lanes(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out) {
  if (fill_lanes_avx512(key, block0, step, param, blocks, out)) return;
  if (fill_lanes_avx2(key, block0, step, param, blocks, out)) return;
  fill_lanes_portable(key, block0, step, param, blocks, out);
}

}  // namespace cddp::philox
