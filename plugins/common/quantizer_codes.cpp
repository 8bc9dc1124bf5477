// quantizer_codes.cpp — the code loops of quantizer_codes.h, one source, three instruction sets.
#include "quantizer_codes.h"

#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cddp::quant {

namespace {
inline uint32_t sign_bit(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b >> 31;
}
}  // namespace

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool max_abs_if_finite(const float* x, int64_t n, float& max_abs) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, sizeof b);
    b &= 0x7FFFFFFFu;
    m = b > m ? b : m;
  }
  if (m >= 0x7F800000u) return false;
  std::memcpy(&max_abs, &m, sizeof m);
  return true;
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
void terngrad_codes(const float* w, const uint16_t* k, float s, int len, uint32_t* code) {
  const double sd = s;
  for (int j = 0; j < len; ++j) {
    const uint32_t keep = double(k[j]) * (1.0 / 65536.0) * sd < double(std::fabs(w[j])) ? 1u : 0u;
    code[j] = keep << sign_bit(w[j]);  // 0: zero, 1: +s, 2: −s
  }
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
double sum_of_squares(const float* x, int64_t lo, int64_t hi) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8)
    for (int k = 0; k < 8; ++k) lane[k] += double(x[i + k]) * double(x[i + k]);
  for (int k = 0; i < hi; ++i, ++k) lane[k] += double(x[i]) * double(x[i]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
void qsgd_codes(const float* w, const uint16_t* k, float norm, double s, int len, uint32_t* code) {
  const double nd = norm;
  for (int j = 0; j < len; ++j) {
    const double r = double(std::fabs(w[j])) / nd * s;        // r ∈ [0, s]
    const double floor_r = double(static_cast<int32_t>(r));  // r ≥ 0: truncation is ⌊r⌋ (r ≤ 2^20)
    const double u = double(k[j]) * (1.0 / 65536.0);          // exact
    double level = floor_r + (u < r - floor_r ? 1.0 : 0.0);  // stochastic rounding
    level = level < s ? level : s;                           // r = s exactly (the float norm's rounding)
    code[j] = static_cast<uint32_t>(static_cast<int32_t>(level)) << 1 | sign_bit(w[j]);
  }
}

[[gnu::target_clones("avx512f", "avx2", "default")]]
bool natural_codes(const float* w, const uint16_t* k, int len, uint8_t* exponents, uint8_t* signs) {
  uint32_t top = 0;  // the largest exponent field seen: 255 is NaN or ±Inf
  for (int j = 0; j < len; ++j) {
    uint32_t b;
    std::memcpy(&b, w + j, sizeof b);
    const uint32_t exponent = (b >> 23) & 0xFFu, mantissa = b & 0x7FFFFFu;
    top = exponent > top ? exponent : top;
    const uint32_t up = (uint32_t{k[j]} << 7) < mantissa ? 1u : 0u;
    exponents[j] = static_cast<uint8_t>(exponent + up < 254u ? exponent + up : 254u);  // 255 would be Inf
  }
  int g = 0;  // sign bits, 8 a byte, LSB first
#if defined(__SSE2__)
  for (; 8 * g + 8 <= len; ++g)  // movemask: the sign bits of 4 floats (SSE2 is in every clone)
    signs[g] = static_cast<uint8_t>(_mm_movemask_ps(_mm_loadu_ps(w + 8 * g)) |
                                    _mm_movemask_ps(_mm_loadu_ps(w + 8 * g + 4)) << 4);
#endif
  for (; 8 * g < len; ++g) {
    uint32_t byte = 0;
    for (int t = 0; t < 8 && 8 * g + t < len; ++t) byte |= sign_bit(w[8 * g + t]) << t;
    signs[g] = static_cast<uint8_t>(byte);
  }
  return top < 255u;
}

}  // namespace cddp::quant
