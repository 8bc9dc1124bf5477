// qsgd_compressor.h — QSGD (Alistarh et al., NeurIPS 2017, "QSGD: Communication-Efficient SGD
// via Gradient Quantization and Encoding"), a Gather payload.
//
// Per bucket of d entries (bucket_size) with norm ‖v‖₂ and s levels:
//   r_i     = |v_i| / ‖v‖₂ · s                      ∈ [0, s]
//   ℓ_i     = ⌊r_i⌋ + [u_i < r_i − ⌊r_i⌋]          stochastic rounding, u_i ~ U[0,1)
//   D(v)_i  = ‖v‖₂ · sign(v_i) · ℓ_i / s
// Unbiased, E[D(v)] = v (the paper's Lemma 3.1; here up to the 16-bit draws' bias, below), with E‖D(v) − v‖² ≤ min(d/s², √d/s)·‖v‖².
// The norm used is the float32 one that travels, so the rounding is unbiased for what is sent;
// its Σ v² runs in double in a fixed order that vectorises (entry i into lane (i − lo) mod 8 of
// the bucket, the 8 lanes added pairwise: quantizer_codes.h, sum_of_squares), the same bits on
// every CPU and thread count.
// Wire: one code of 1 + ⌈log₂(s+1)⌉ bits an entry (sign, then level), bit-packed, plus one
// float32 norm a bucket. The paper's Elias coding of the levels is not used: fixed width lets
// every rank decode without a pass over variable-length codes.
// The draws u_i come from Philox keyed by (seed, step, parameter), never the global RNG, with
// 16 bits each (quantizer_support.h, Uniforms): u_i = k/2^16, so ℓ_i rounds up with probability
// ⌈(r_i − ⌊r_i⌋)·2^16⌉/2^16 instead of r_i − ⌊r_i⌋, and E[D(v)_i] − v_i has v_i's sign and a size
// below 2^−16·‖v‖₂/s: one 65,536th of a level step. (With 24-bit draws it was 2^−24 of a step.)
//
// It will not keep state or run on GPU; NaN/Inf is a clear error naming the parameter.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

namespace cddp::qsgd {

class QsgdCompressor final : public Compressor {
 public:
  explicit QsgdCompressor(const ParamMap& params);

  std::string name() const override { return "qsgd"; }
  Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) override;
  void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) override;
  void decode_add_(const Payload& payload, at::Tensor& dense) const override;
  void combine(const std::vector<Payload>& ranks, at::Tensor& average) const override;
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;

  int code_bits() const { return width_; }

 private:
  int64_t levels_, bucket_;
  int width_;  // 1 sign bit + level bits
};

}  // namespace cddp::qsgd
