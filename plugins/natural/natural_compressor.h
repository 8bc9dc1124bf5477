// natural_compressor.h — natural compression (Horváth et al., 2019, "Natural Compression for
// Distributed Deep Learning"), a Gather payload: each entry is rounded stochastically to one
// of the two powers of two around it, so only its sign and exponent travel.
//
//   for 2^e ≤ |v_i| < 2^(e+1):   C(v)_i = sign(v_i) · 2^(e+1)   with probability (|v_i| − 2^e)/2^e
//                                          sign(v_i) · 2^e       otherwise
// Unbiased, E[C(v)_i] = v_i (up to the 16-bit draws' bias, below), with variance ≤ (1/8)·v_i² (the paper's Theorem 1). Below the
// smallest normal float (2^−126) the two neighbours are 0 and 2^−126, with the same rule.
// Wire: 9 bits an entry in one byte part: first n bytes, each entry's float32 exponent field (0:
// zero), then ceil(n/8) bytes of sign bits (bit i mod 8 of byte i/8, LSB first; 1 for negative):
// ceil(9n/8) bytes, as 9-bit codes packed back to back would be, but every entry's byte and bit
// sit at a fixed place, so encode and decode run without a bit cursor. fp32's mantissa is never
// sent. The one value that would round up past float32's largest
// power of two (2^127) stays at 2^127: a bias only for entries above 1.7·10^38.
// The draws come from Philox keyed by (seed, step, parameter), never the global RNG, with
// 16 bits each (quantizer_support.h, Uniforms): u = k/2^16 rounds up when k·2^7 < m (m the
// 23-bit mantissa), with probability ⌈m/2^7⌉/2^16 instead of m/2^23: E[C(v)_i] − v_i has v_i's
// sign and a size below 2^−16 of the gap between the two neighbours (2^e, at most |v_i|, for a
// normal entry; 2^−126 below the normals). (With 24-bit draws it was exact.)
//
// It will not keep state or run on GPU; NaN/Inf is a clear error naming the parameter.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

namespace cddp::natural {

class NaturalCompressor final : public Compressor {
 public:
  explicit NaturalCompressor(const ParamMap& params);

  std::string name() const override { return "natural"; }
  Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) override;
  void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) override;
  void decode_add_(const Payload& payload, at::Tensor& dense) const override;
  void combine(const std::vector<Payload>& ranks, at::Tensor& average) const override;
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;

  // n exponent bytes, then ceil(n/8) sign bytes: ceil(9n/8).
  static int64_t wire_size(int64_t n) { return n + (n + 7) / 8; }
};

}  // namespace cddp::natural
