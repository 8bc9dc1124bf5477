// sign_compressor.h — one bit an entry, three ways of reading it back (PayloadKind::Gather).
//
//   variant = "signsgd": signSGD with majority vote (Bernstein et al., ICML 2018, "signSGD:
//             Compressed Optimisation for Non-Convex Problems", Alg. 3). D(x) = sign(x); the
//             ranks' aggregate is the majority vote sign(Σ_r sign(x_r)) ∈ {−1, 0, +1}, not a
//             mean — the plugin's own combine(). Meant without error feedback.
//   variant = "scaled":  scaled sign, D(x) = ‖x‖₁/n · sign(x) (Karimireddy et al., ICML 2019,
//             "Error Feedback Fixes SignSGD and other Gradient Compression Schemes", EF-SGD);
//             the aggregate is the mean of the ranks' D(x_r). Meant with error feedback.
//   variant = "onebit":  1-bit SGD (Seide et al., Interspeech 2014, "1-Bit Stochastic Gradient
//             Descent and its Application to Data-Parallel Distributed Training of Speech
//             DNNs"): two reconstruction values, the mean of the entries ≥ 0 and the mean of the
//             entries < 0; D(x)_i is the one of its side. Aggregate: the mean over ranks.
// Wire: ceil(n/8) bytes of signs (bit i of byte i/8, LSB first; 1 for x ≥ 0, −0 included),
// plus 4 bytes (scaled) or 8 bytes (onebit) of float32 scales. Deterministic: no RNG.
//
// It will not keep state, accept NaN/Inf (a clear error naming the parameter), or run on GPU.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

#include <string>
#include <vector>

namespace cddp::sign {

enum class Variant { SignSgd, Scaled, OneBit };

class SignCompressor final : public Compressor {
 public:
  explicit SignCompressor(const ParamMap& params);

  std::string name() const override { return "sign"; }
  Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) override;
  void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) override;
  void decode_add_(const Payload& payload, at::Tensor& dense) const override;
  void combine(const std::vector<Payload>& ranks, at::Tensor& average) const override;
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;

  static int64_t scale_count(Variant v) { return v == Variant::SignSgd ? 0 : v == Variant::Scaled ? 1 : 2; }

 private:
  Variant variant_;
};

}  // namespace cddp::sign
