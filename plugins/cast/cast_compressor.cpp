// cast_compressor.cpp — CastCompressor: scale, cast, decode the sum.
#include "cast_compressor.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace cddp::cast {

extern const ParamSpec kCastParams[];
extern const size_t kCastParamCount;

CastCompressor::CastCompressor(const ParamMap& params) {
  ParamReader r("cast", kCastParams, kCastParamCount, params);
  const std::string d = r.get_string("dtype", "fp16");
  if (d == "fp16") wire_ = at::kHalf;
  else if (d == "bf16") wire_ = at::kBFloat16;
  else r.fail("parameter 'dtype' = \"" + d + "\" is not one of \"fp16\", \"bf16\"");
}

Payload CastCompressor::encode(const at::Tensor& acc, PluginState&, const CompressContext& ctx) {
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble, "cast: parameter '",
              ctx.param_name, "' is ", acc.scalar_type(), "; expected float32 or float64");
  TORCH_CHECK(ctx.world_size >= 1, "cast: world_size must be >= 1");
  Payload p;
  p.numel = acc.numel();
  p.shape = acc.sizes().vec();
  p.dtype = acc.scalar_type();
  p.world_size = ctx.world_size;
  at::Tensor scaled = ctx.world_size > 1 ? acc.reshape(-1).div(ctx.world_size) : acc.reshape(-1);
  at::Tensor wire = scaled.to(wire_).contiguous();
  // A finite input that became Inf overflowed the 16-bit range; NaN/Inf in the input is an error too.
  if (p.numel > 0 && !at::isfinite(wire).all().item<bool>()) {
    const bool input_finite = at::isfinite(acc).all().item<bool>();
    TORCH_CHECK(false, "cast: ",
                input_finite ? (wire_ == at::kHalf ? "a value overflows fp16 (|x|/W > 65504)" : "a value overflows bf16")
                             : "non-finite value (NaN or Inf)",
                " in parameter '", ctx.param_name, "' at step ", ctx.step);
  }
  p.parts.push_back(wire);
  return p;
}

void CastCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  TORCH_CHECK(p.parts.size() == 1 && p.parts[0].numel() == p.numel, "cast: payload has the wrong layout");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == p.numel, "cast: decode_add_ needs ", p.numel, " entries");
  at::Tensor d = p.parts[0].to(dense.scalar_type());
  if (p.world_size > 1) d.mul_(p.world_size);  // D(own) = W · cast(acc / W)
  dense.view(-1).add_(d);
}

void CastCompressor::decode_sum(const Payload& sum, int, at::Tensor& average) const {
  TORCH_CHECK(sum.parts.size() == 1 && sum.parts[0].numel() == sum.numel, "cast: summed payload has the wrong layout");
  average.view(-1).copy_(sum.parts[0]);  // Σ_r cast(acc_r / W): already the mean
}

int64_t CastCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return 2 * n;
}

}  // namespace cddp::cast
