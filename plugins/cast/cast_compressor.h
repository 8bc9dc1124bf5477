// cast_compressor.h — fp16 / bf16 casts of the gradient (PayloadKind::Sum), as PyTorch DDP's
// fp16_compress_hook and bf16_compress_hook do: each rank divides by the world size *before*
// casting, so that the sum of W values cannot overflow fp16 where the mean would not, then the
// 16-bit values are allreduced and the sum, already the mean, is cast back.
//   payload = [cast(acc / W)]  (numel entries of 2 bytes)
//   D(own)  = W · float(cast(acc / W)): the host's residual acc − D(own) keeps the rounding
//             error in fp32, so error feedback absorbs it (off by default in a pure cast).
//   average = float(Σ_r cast(acc_r / W)), the sum summed in 16 bits by the collective.
// A value whose acc/W does not fit the 16-bit type is a clear error naming the parameter (fp16
// tops out at 65504), as is NaN/Inf.
//
// It will not keep state, use an RNG, or change the dtype of what the optimizer sees.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

#include <string>
#include <vector>

namespace cddp::cast {

class CastCompressor final : public Compressor {
 public:
  explicit CastCompressor(const ParamMap& params);

  std::string name() const override { return "cast"; }
  Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) override;
  // The same into last step's 16-bit buffer when the host hands it back (Compressor::encode_into).
  void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) override;
  void decode_add_(const Payload& payload, at::Tensor& dense) const override;
  void decode_sum(const Payload& sum, int world, at::Tensor& average) const override;
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;

 private:
  at::ScalarType wire_;  // at::kHalf or at::kBFloat16
};

}  // namespace cddp::cast
