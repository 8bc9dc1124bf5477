// natural_compressor.cpp — NaturalCompressor: stochastic rounding to powers of two on the
// float32 bit pattern, 9-bit codes.
#include "natural_compressor.h"

#include "quantizer_codes.h"
#include "quantizer_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace cddp::natural {

extern const ParamSpec* const kNaturalParams;

namespace {
float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
}  // namespace

NaturalCompressor::NaturalCompressor(const ParamMap& params) { ParamReader("natural", kNaturalParams, 0, params); }

Payload NaturalCompressor::encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) {
  Payload p;
  encode_into(acc, state, ctx, p);
  return p;
}

void NaturalCompressor::encode_into(const at::Tensor& acc, PluginState&, const CompressContext& ctx, Payload& p) {
  // Finiteness is checked in the code loop itself (an exponent field of 255), not in a pass of its own.
  const at::Tensor x = quant::checked_input("natural", acc, ctx, /*check_finite=*/false);
  const int64_t n = x.numel();
  const float* v = x.data_ptr<float>();
  at::Tensor codes = reusable_part(p, 0, quant::packed_bytes(n, kBits), at::kByte);  // BitWriter stores every byte
  quant::describe_payload(p, acc, ctx);
  quant::BitWriter out(codes.data_ptr<uint8_t>(), kBits);
  quant::Uniforms u(quant::stream_for(ctx, quant::kTagNatural));
  constexpr int kPiece = quant::Uniforms::kChunk;
  uint32_t code[kPiece];
  bool finite = true;
  for (int64_t i0 = 0; i0 < n; i0 += kPiece) {  // a chunk of draws at a time: loops without branches
    const int len = static_cast<int>(std::min<int64_t>(kPiece, n - i0));
    // Up with probability m/2^23: for a normal entry (|v| − 2^e)/2^e, the mantissa's fraction; for
    // zero or a subnormal (exponent field 0, neighbours 0 and 2^−126) |v|/2^−126 = m/2^23 as well.
    // With u = k/2^16 that is k·2^7 < m, in integers (m = 0: never, exact powers of two stay).
    finite &= quant::natural_codes(v + i0, u.chunk(i0), len, code);
    out.put_many(code, len);
  }
  out.flush();
  if (!finite) quant::fail_nonfinite("natural", ctx);
  p.parts = {codes};
}

void NaturalCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  const int64_t n = p.numel;
  TORCH_CHECK(p.parts.size() == 1 && p.parts[0].numel() == quant::packed_bytes(n, kBits),
              "natural: payload does not have the 9-bit layout");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == n, "natural: decode_add_ needs ", n, " contiguous entries");
  quant::BitReader in(p.parts[0].data_ptr<uint8_t>(), kBits);
  AT_DISPATCH_FLOATING_TYPES(dense.scalar_type(), "natural_decode", [&] {
    scalar_t* d = dense.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t c = in.get();
      d[i] += static_cast<scalar_t>(float_of((c >> 8) << 31 | (c & 0xFFu) << 23));  // ±2^(e−127), mantissa 0
    }
  });
}

void NaturalCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  quant::mean_of_decodes(*this, ranks, average);
}

int64_t NaturalCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  return quant::packed_bytes(quant::numel_of(shape), kBits);
}

}  // namespace cddp::natural
