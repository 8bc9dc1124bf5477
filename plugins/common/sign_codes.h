// sign_codes.h — the sign plugin's encode loop (signs, finiteness and the scale sums in one
// pass), for float32 and float64, compiled once for AVX-512, AVX2 and plain x86-64 and chosen at
// load time (GCC target_clones), as quantizer_codes.h is.
//
// The sums are doubles in a fixed order, chosen so that it vectorises (a strictly sequential sum
// runs at one dependent add per entry, 4× a read pass): entry i adds into lane i mod 8 of its
// block of 1024 entries; a block's lanes are added ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 +
// l7)) onto the total, blocks in index order. It is deterministic and the same on every CPU and
// for any thread count, which is all a scale needs: each rank sends its own, and every rank
// decodes that one. There is no multiply to fuse.
//
// It will not allocate or check its arguments (the plugin does).
#pragma once

#include <cstdint>

namespace cddp::sign_codes {

struct SignSums {
  double l1 = 0;       // Σ |x_i|              (with_l1)
  double pos = 0;      // Σ x_i over x_i ≥ 0   (with_sides; −0 counts as ≥ 0)
  double neg = 0;      // Σ x_i over x_i < 0   (with_sides)
  int64_t pos_n = 0;   // #{i : x_i ≥ 0}       (with_sides)
};

// bits[i / 8] bit i % 8 = [x_i ≥ 0] (LSB first, ceil(n / 8) bytes, the last byte's high bits 0),
// and the sums asked for. Returns false when some x_i is NaN or ±Inf (bits and sums are then
// unspecified).
bool sign_bits(const float* x, int64_t n, uint8_t* bits);
bool sign_bits_l1(const float* x, int64_t n, uint8_t* bits, SignSums& sums);
bool sign_bits_sides(const float* x, int64_t n, uint8_t* bits, SignSums& sums);
// The same for float64 entries (the sums in the same order).
bool sign_bits(const double* x, int64_t n, uint8_t* bits);
bool sign_bits_l1(const double* x, int64_t n, uint8_t* bits, SignSums& sums);
bool sign_bits_sides(const double* x, int64_t n, uint8_t* bits, SignSums& sums);

}  // namespace cddp::sign_codes
