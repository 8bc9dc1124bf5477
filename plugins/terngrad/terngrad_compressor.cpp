// terngrad_compressor.cpp — TernGradCompressor: the scaler, Bernoulli draws, 2-bit codes.
#include "terngrad_compressor.h"

#include "quantizer_support.h"

#include <cmath>

namespace cddp::terngrad {

extern const ParamSpec* const kTernGradParams;
extern const size_t kTernGradParamCount;

TernGradCompressor::TernGradCompressor(const ParamMap& params) {
  ParamReader("terngrad", kTernGradParams, kTernGradParamCount, params);
}

Payload TernGradCompressor::encode(const at::Tensor& acc, PluginState&, const CompressContext& ctx) {
  const at::Tensor x = quant::checked_input("terngrad", acc, ctx);
  Payload p = quant::payload_like(acc, ctx);
  const int64_t n = x.numel();
  const float* v = x.data_ptr<float>();
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s = std::max(s, std::fabs(v[i]));  // s = ‖v‖_∞
  at::Tensor codes = at::zeros({quant::packed_bytes(n, 2)}, at::kByte);
  quant::BitWriter out(codes.data_ptr<uint8_t>(), 2);
  quant::Uniforms u(quant::stream_for(ctx, quant::kTagTernGrad));
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = s > 0 && double(u.at(i)) < double(std::fabs(v[i])) / double(s);  // b_i ~ Bernoulli(|v_i|/s)
    out.put(keep ? (std::signbit(v[i]) ? 2u : 1u) : 0u);
  }
  p.parts = {codes, at::full({1}, s, at::kFloat)};
  return p;
}

void TernGradCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  const int64_t n = p.numel;
  TORCH_CHECK(p.parts.size() == 2 && p.parts[0].numel() == quant::packed_bytes(n, 2) && p.parts[1].numel() == 1,
              "terngrad: payload does not have the 2-bit layout");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == n, "terngrad: decode_add_ needs ", n, " contiguous entries");
  quant::BitReader in(p.parts[0].data_ptr<uint8_t>(), 2);
  const double s = p.parts[1].data_ptr<float>()[0];
  AT_DISPATCH_FLOATING_TYPES(dense.scalar_type(), "terngrad_decode", [&] {
    scalar_t* d = dense.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t c = in.get();
      if (c == 1) d[i] += static_cast<scalar_t>(s);
      else if (c == 2) d[i] -= static_cast<scalar_t>(s);
    }
  });
}

void TernGradCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  quant::mean_of_decodes(*this, ranks, average);
}

int64_t TernGradCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  return quant::packed_bytes(quant::numel_of(shape), 2) + 4;
}

}  // namespace cddp::terngrad
