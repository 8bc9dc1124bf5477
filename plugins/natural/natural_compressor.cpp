// natural_compressor.cpp — NaturalCompressor: stochastic rounding to powers of two on the
// float32 bit pattern; exponent bytes and sign bits.
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
  at::Tensor codes = reusable_part(p, 0, wire_size(n), at::kByte);  // every byte is written below
  quant::describe_payload(p, acc, ctx);
  uint8_t* exponents = codes.data_ptr<uint8_t>();  // [n]
  uint8_t* signs = exponents + n;                  // [ceil(n / 8)]
  quant::Uniforms u(quant::stream_for(ctx, quant::kTagNatural));
  constexpr int kPiece = quant::Uniforms::kChunk;  // a multiple of 8: each piece starts a sign byte
  bool finite = true;
  for (int64_t i0 = 0; i0 < n; i0 += kPiece) {  // a chunk of draws at a time: loops without branches
    const int len = static_cast<int>(std::min<int64_t>(kPiece, n - i0));
    // Up with probability m/2^23: for a normal entry (|v| − 2^e)/2^e, the mantissa's fraction; for
    // zero or a subnormal (exponent field 0, neighbours 0 and 2^−126) |v|/2^−126 = m/2^23 as well.
    // With u = k/2^16 that is k·2^7 < m, in integers (m = 0: never, exact powers of two stay).
    finite &= quant::natural_codes(v + i0, u.chunk(i0), len, exponents + i0, signs + i0 / 8);
  }
  if (!finite) quant::fail_nonfinite("natural", ctx);
  p.parts = {codes};
}

void NaturalCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  const int64_t n = p.numel;
  TORCH_CHECK(p.parts.size() == 1 && p.parts[0].numel() == wire_size(n),
              "natural: payload does not have the layout of ", n, " exponent bytes and ", (n + 7) / 8, " sign bytes");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == n, "natural: decode_add_ needs ", n, " contiguous entries");
  const uint8_t* exponents = p.parts[0].data_ptr<uint8_t>();
  const uint8_t* signs = exponents + n;
  AT_DISPATCH_FLOATING_TYPES(dense.scalar_type(), "natural_decode", [&] {
    scalar_t* d = dense.data_ptr<scalar_t>();
    // ±2^(e−127) (0 for e = 0): the float with mantissa 0. Eight entries a sign byte.
    auto value = [&](int64_t i, uint32_t sign_byte, int k) {
      return static_cast<scalar_t>(float_of(((sign_byte >> k) & 1u) << 31 | uint32_t{exponents[i]} << 23));
    };
    int64_t i0 = 0;
    for (; i0 + 8 <= n; i0 += 8) {
      const uint32_t sb = signs[i0 >> 3];
      for (int k = 0; k < 8; ++k) d[i0 + k] += value(i0 + k, sb, k);
    }
    for (int k = 0; i0 + k < n; ++k) d[i0 + k] += value(i0 + k, signs[i0 >> 3], k);
  });
}

void NaturalCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  quant::mean_of_decodes(*this, ranks, average);
}

int64_t NaturalCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  return wire_size(quant::numel_of(shape));
}

}  // namespace cddp::natural
