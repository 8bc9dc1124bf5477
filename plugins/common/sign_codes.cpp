// sign_codes.cpp — the loops of sign_codes.h, one source, two element types, three instruction sets.
//
// Per group of 8 entries: the signs come from one SSE2 compare-and-movemask per 4 (SSE2 is in
// every x86-64 clone), finiteness from the largest |x| bit pattern (NaN and ±Inf lie above every
// finite float), and the lane sums are 8-wide double adds of selects, which the clone's vector
// unit does in one or two registers. A select adds +0 where the old loop added v·0 = ±0: the
// same bits, since no lane (starting at +0) can ever hold −0.
#include "sign_codes.h"

#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cddp::sign_codes {

namespace {

constexpr int64_t kBlock = 1024;  // BlockedSum's block: a multiple of 8

template <class Lanes>
inline double fold(const Lanes& l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// Bit k of the result: x[k] ≥ 0 (−0 included; NaN gives 1 and is caught by the finiteness test).
inline uint32_t up_mask8(const float* x) {
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps();
  const int down = _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x), zero)) |
                   _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x + 4), zero)) << 4;
  return ~uint32_t(down) & 0xFFu;
#else
  uint32_t up = 0;
  for (int k = 0; k < 8; ++k) up |= (x[k] < 0 ? 0u : 1u) << k;
  return up;
#endif
}

// Eight entries as GCC vectors, per element type: one register under AVX-512 (float), two under
// AVX2, four under SSE2; float64 takes twice as many. Bits: the entries' bit patterns; kInf: +Inf's.
template <class T>
struct Vec8;
template <>
struct Vec8<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef uint32_t Bits __attribute__((vector_size(32)));
  typedef uint32_t Word;
  static constexpr Word kInf = 0x7F800000u;
};
template <>
struct Vec8<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef uint64_t Bits __attribute__((vector_size(64)));
  typedef uint64_t Word;
  static constexpr Word kInf = 0x7FF0000000000000ull;
};
typedef double D8 __attribute__((vector_size(64)));
typedef int64_t L8 __attribute__((vector_size(64)));

// Bit k of the result: x[k] ≥ 0 (−0 included; NaN gives 1 and is caught by the finiteness test).
inline uint32_t up_mask8(const double* x) {
  uint32_t up = 0;
  for (int k = 0; k < 8; ++k) up |= (x[k] < 0 ? 0u : 1u) << k;
  return up;
}

// The pass, for the element type and the sums chosen at compile time; inlined into each cloned
// entry point so that its vector code is generated for that clone's instruction set.
template <class T, bool kL1, bool kSides>
[[gnu::always_inline]] inline bool run(const T* x, int64_t n, uint8_t* bits, SignSums& out) {
  using V = typename Vec8<T>::V;
  using Bits = typename Vec8<T>::Bits;
  using Word = typename Vec8<T>::Word;
  constexpr Word kAbs = ~Word(0) >> 1;  // clears the sign bit
  Bits max_bits = {};                   // lane-wise largest |x| bit pattern
  const Bits abs_mask = {kAbs, kAbs, kAbs, kAbs, kAbs, kAbs, kAbs, kAbs};
  const D8 zero = {0, 0, 0, 0, 0, 0, 0, 0};
  double l1 = 0, pos = 0, neg = 0;
  int64_t pos_n = 0;
  const int64_t full = n & ~int64_t(7);
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    D8 l1_lane = zero, pos_lane = zero, neg_lane = zero;
    const int64_t b_end = b0 + kBlock < full ? b0 + kBlock : full;
    for (int64_t i0 = b0; i0 < b_end; i0 += 8) {
      V f;
      std::memcpy(&f, x + i0, sizeof f);
      const uint32_t up = up_mask8(x + i0);
      bits[i0 >> 3] = static_cast<uint8_t>(up);
      Bits b;
      std::memcpy(&b, &f, sizeof b);
      b &= abs_mask;
      max_bits = b > max_bits ? b : max_bits;
      if constexpr (kL1 || kSides) {
        const D8 d = __builtin_convertvector(f, D8);
        if constexpr (kL1) l1_lane += d < zero ? -d : d;  // |d|
        if constexpr (kSides) {
          const L8 down = d < zero;  // all ones where d < 0
          pos_lane += down ? zero : d;
          neg_lane += down ? d : zero;
          pos_n += __builtin_popcount(up);
        }
      }
    }
    if (b_end == full && full < n && full < b0 + kBlock) {  // the last 1..7 entries, in this block
      uint32_t up = 0;
      for (int64_t i = full; i < n; ++i) {
        const int k = int(i - full);
        const double d = x[i];
        Word b;
        std::memcpy(&b, x + i, sizeof b);
        b &= kAbs;
        max_bits[0] = b > max_bits[0] ? b : max_bits[0];
        up |= (d < 0 ? 0u : 1u) << k;
        if constexpr (kL1) l1_lane[k] += std::fabs(d);
        if constexpr (kSides) {
          pos_lane[k] += d < 0 ? 0.0 : d;
          neg_lane[k] += d < 0 ? d : 0.0;
        }
      }
      bits[full >> 3] = static_cast<uint8_t>(up);
      if constexpr (kSides) pos_n += __builtin_popcount(up);
    }
    if constexpr (kL1) l1 += fold(l1_lane);
    if constexpr (kSides) pos += fold(pos_lane), neg += fold(neg_lane);
  }
  out.l1 = l1, out.pos = pos, out.neg = neg, out.pos_n = pos_n;
  Word m = 0;
  for (int k = 0; k < 8; ++k) m = max_bits[k] > m ? max_bits[k] : m;
  return m < Vec8<T>::kInf;
}

}  // namespace

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool sign_bits(const float* x, int64_t n, uint8_t* bits) {
  SignSums unused;
  return run<float, false, false>(x, n, bits, unused);
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool sign_bits_l1(const float* x, int64_t n, uint8_t* bits, SignSums& sums) {
  return run<float, true, false>(x, n, bits, sums);
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool sign_bits_sides(const float* x, int64_t n, uint8_t* bits, SignSums& sums) {
  return run<float, false, true>(x, n, bits, sums);
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool sign_bits(const double* x, int64_t n, uint8_t* bits) {
  SignSums unused;
  return run<double, false, false>(x, n, bits, unused);
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool sign_bits_l1(const double* x, int64_t n, uint8_t* bits, SignSums& sums) {
  return run<double, true, false>(x, n, bits, sums);
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool sign_bits_sides(const double* x, int64_t n, uint8_t* bits, SignSums& sums) {
  return run<double, false, true>(x, n, bits, sums);
}

}  // namespace cddp::sign_codes
