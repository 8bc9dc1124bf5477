// quantizer_codes.h — the per-entry code loops of the stochastic quantizers (terngrad, qsgd,
// natural), compiled once for AVX-512, AVX2 and plain x86-64 and chosen at load time (GCC
// target_clones).
// Each is the plugin's definition written as one loop without branches; every variant computes
// the same IEEE operations in the same order (no FMA contraction: quantizer_codes.cpp is built
// with -ffp-contract=off), so every CPU writes the same codes. The draws k are the 16-bit
// uniforms of quantizer_support.h (u = k / 2^16); `len` entries, no alignment needed.
//
// It will not draw, pack bits or check its input: the plugins do (quantizer_support.h), except
// that natural_codes and sum_of_squares report a non-finite input as they pass.
#pragma once

#include <cstdint>

namespace cddp::quant {

// max |x_i| into max_abs and true, or false when some x_i is NaN or ±Inf: one pass. On the bit
// patterns with the sign cleared, unsigned order is the order of |x| for finite floats, and NaN
// and ±Inf lie above every finite one (exponent field all ones: 0x7F800000 and up).
bool max_abs_if_finite(const float* x, int64_t n, float& max_abs);

// TernGrad (Wen et al., NeurIPS 2017): code[j] = 0 (zero), 1 (+s) or 2 (−s), kept when
// u·s < |w_j| in double — the same decisions as u < |w_j|/s (terngrad_compressor.cpp says why).
void terngrad_codes(const float* w, const uint16_t* k, float s, int len, uint32_t* code);

// Σ x_i² over [lo, hi) in double, in a fixed order that vectorises: entry i into lane (i − lo) mod 8,
// the lanes added pairwise, ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). The same bits on
// every CPU and thread count, which is all a norm that travels with its bucket needs. A NaN or
// ±Inf entry makes it non-finite; finite floats cannot (their squares stay below 2^256).
double sum_of_squares(const float* x, int64_t lo, int64_t hi);

// QSGD (Alistarh et al., NeurIPS 2017), a bucket with norm > 0: r = |w_j|/norm·s in double,
// level = ⌊r⌋ + [u < r − ⌊r⌋], at most s; code[j] = level << 1 | sign bit of w_j.
void qsgd_codes(const float* w, const uint16_t* k, float norm, double s, int len, uint32_t* code);

// Natural compression (Horváth et al., 2019), len entries: exponents[j] = w_j's exponent field,
// raised by one when k_j·2^7 < its 23-bit mantissa (up with probability m/2^23; see
// natural_compressor.cpp), and at most 254; signs[j / 8] bit j mod 8 = w_j's sign bit
// (ceil(len / 8) bytes, the last one's unused bits 0). Returns false when some w_j is NaN or ±Inf
// (exponent field 255): the finiteness check rides on this pass.
bool natural_codes(const float* w, const uint16_t* k, int len, uint8_t* exponents, uint8_t* signs);

}  // namespace cddp::quant
