// terngrad_compressor.cpp — TernGradCompressor: the scaler, Bernoulli draws, 2-bit codes.
#include "terngrad_compressor.h"

#include "quantizer_codes.h"
#include "quantizer_support.h"

#include <algorithm>
#include <cmath>

namespace cddp::terngrad {

extern const ParamSpec* const kTernGradParams;
extern const size_t kTernGradParamCount;

TernGradCompressor::TernGradCompressor(const ParamMap& params) {
  ParamReader("terngrad", kTernGradParams, kTernGradParamCount, params);
}

Payload TernGradCompressor::encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) {
  Payload p;
  encode_into(acc, state, ctx, p);
  return p;
}

void TernGradCompressor::encode_into(const at::Tensor& acc, PluginState&, const CompressContext& ctx, Payload& p) {
  const at::Tensor x = quant::checked_input("terngrad", acc, ctx, /*check_finite=*/false);
  const int64_t n = x.numel();
  const float* v = x.data_ptr<float>();
  float s = 0;  // s = ‖v‖_∞, and the finiteness check, in one pass
  if (!quant::max_abs_if_finite(v, n, s)) quant::fail_nonfinite("terngrad", ctx);
  at::Tensor codes = reusable_part(p, 0, quant::packed_bytes(n, 2), at::kByte);  // BitWriter stores every byte
  at::Tensor scaler = reusable_part(p, 1, 1, at::kFloat);
  scaler.data_ptr<float>()[0] = s;
  quant::describe_payload(p, acc, ctx);
  quant::BitWriter out(codes.data_ptr<uint8_t>(), 2);
  quant::Uniforms u(quant::stream_for(ctx, quant::kTagTernGrad));
  constexpr int kPiece = quant::Uniforms::kChunk;
  uint32_t code[kPiece];
  for (int64_t i0 = 0; i0 < n; i0 += kPiece) {  // a chunk of draws at a time: loops without branches
    const int len = static_cast<int>(std::min<int64_t>(kPiece, n - i0));
    // b_i ~ Bernoulli(|v_i|/s): u < |v|/s, decided as u·s < |v| without a division. The same bits as
    // u < double(|v|)/double(s): u·s is exact in double (16 + 24 bits), and a float quotient |v|/s
    // that is not u itself lies further than half an ulp of double from every u = k/2^16.
    quant::terngrad_codes(v + i0, u.chunk(i0), s, len, code);
    out.put_many(code, len);
  }
  out.flush();
  p.parts = {codes, scaler};
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
    // Code 0 adds −0, which changes nothing (x + −0 = x, −0 included); no branch on the code.
    const scalar_t value[4] = {scalar_t(-0.0), static_cast<scalar_t>(s), static_cast<scalar_t>(-s), scalar_t(-0.0)};
    for (int64_t i = 0; i < n; ++i) d[i] += value[in.get()];
  });
}

void TernGradCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  quant::mean_of_decodes(*this, ranks, average);
}

int64_t TernGradCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  return quant::packed_bytes(quant::numel_of(shape), 2) + 4;
}

}  // namespace cddp::terngrad
