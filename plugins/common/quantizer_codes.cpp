// quantizer_codes.cpp — the code loops of quantizer_codes.h, one source, three instruction sets.
#include "quantizer_codes.h"

#include <cmath>
#include <cstring>

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

}  // namespace cddp::quant
