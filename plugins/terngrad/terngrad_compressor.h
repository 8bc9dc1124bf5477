// terngrad_compressor.h — TernGrad (Wen et al., NeurIPS 2017, "TernGrad: Ternary Gradients to
// Reduce Communication in Distributed Deep Learning"), a Gather payload.
//
//   s       = ‖v‖_∞ of the tensor (the paper's per-layer scaler)
//   b_i     ~ Bernoulli(|v_i| / s)                  u_i ~ U[0,1): b_i = [u_i < |v_i|/s]
//   D(v)_i  = s · sign(v_i) · b_i                   ∈ {−s, 0, +s}
// Unbiased, E[D(v)] = v (up to the 16-bit draws' bias, below). Wire: 2 bits an entry (0: zero, 1: +s, 2: −s), bit-packed, and one
// float32 scaler. The paper's layer-wise gradient clipping (at 2.5σ) is not applied here: it is
// a change to the gradient, not to its coding, and would break unbiasedness.
// The draws come from Philox keyed by (seed, step, parameter), never the global RNG, with
// 16 bits each (quantizer_support.h, Uniforms): u_i = k/2^16, so b_i = 1 with probability
// ⌈|v_i|/s·2^16⌉/2^16, and E[D(v)_i] − v_i has v_i's sign and a size below 2^−16·s.
//
// It will not keep state or run on GPU; NaN/Inf is a clear error naming the parameter.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

namespace cddp::terngrad {

class TernGradCompressor final : public Compressor {
 public:
  explicit TernGradCompressor(const ParamMap& params);

  std::string name() const override { return "terngrad"; }
  Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) override;
  void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) override;
  void decode_add_(const Payload& payload, at::Tensor& dense) const override;
  void combine(const std::vector<Payload>& ranks, at::Tensor& average) const override;
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;
};

}  // namespace cddp::terngrad
