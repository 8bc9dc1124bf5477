// philox_lanes.h — many Philox4x32-10 blocks at once (philox.h), lanes kept apart, on the CPU:
// AVX-512F or AVX2 when the CPU has them (checked at run time), portable C++ otherwise, the
// same bits on every path (tests/kernels/philox_lanes_test.cpp compares each with philox.h).
//
// The stochastic quantizers (quantizer_support.h) draw their uniforms through this: Philox's
// ten rounds of 32x32→64-bit products are what their encode spends most of its time on, and
// a vector unit does 4 (AVX2) or 8 (AVX-512) of those products per instruction.
//
// It will not decide which element gets which word (quantizer_support.h does), keep state or
// allocate.
#pragma once

#include "philox.h"

#include <cstdint>

namespace cddp::philox {

// out[l * blocks + j] = lane l (0..3) of philox4x32_10(randomk_counter(block0 + j, step, param), key)
// for j in [0, blocks): "lane-major", so that a vector of consecutive blocks stores as it is.
// Any blocks >= 0; the counter's 64-bit block number may carry from its low to its high word.
void fill_lanes(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out);

// The portable path, always available, and the vector paths (false: the CPU lacks the
// instructions, or the build does not target x86-64; out is then untouched). For tests and the bench.
void fill_lanes_portable(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out);
bool fill_lanes_avx2(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out);
bool fill_lanes_avx512(Key key, uint64_t block0, int64_t step, int64_t param, int blocks, uint32_t* out);

}  // namespace cddp::philox
