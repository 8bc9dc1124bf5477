// cast_compressor.cpp — CastCompressor: scale, cast, decode the sum.
#include "cast_compressor.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CDDP_CAST_F16C 1
#else
#define CDDP_CAST_F16C 0
#endif

namespace cddp::cast {

extern const ParamSpec kCastParams[];
extern const size_t kCastParamCount;

CastCompressor::CastCompressor(const ParamMap& params) {
  ParamReader r("cast", kCastParams, kCastParamCount, params);
  const std::string d = r.get_string("dtype");
  if (d == "fp16") wire_ = at::kHalf;
  else if (d == "bf16") wire_ = at::kBFloat16;
  else r.fail("parameter 'dtype' = \"" + d + "\" is not one of \"fp16\", \"bf16\"");
}

namespace {

// The 16-bit patterns, as c10 rounds: float → fp16 or bf16 to nearest, ties to even.
uint16_t half_bits(float f) { return c10::Half(f).x; }
uint16_t bf16_bits(float f) { return c10::BFloat16(f).x; }
float from_half(uint16_t h) { return c10::detail::fp16_ieee_to_fp32_value(h); }
float from_bf16(uint16_t h) {
  const uint32_t b = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

#if CDDP_CAST_F16C
// F16C's vcvtps2ph with imm 0 rounds to nearest even, as c10::Half does: the same bits, 8 at a time.
__attribute__((target("avx,f16c"))) void to_half_f16c(const float* x, float w, uint16_t* out, int64_t n) {
  const __m256 vw = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (w != 1.0f) v = _mm256_div_ps(v, vw);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(v, 0));
  }
  for (; i < n; ++i) out[i] = half_bits(x[i] / w);
}
// d[i] += w·float(h[i]) (add) or d[i] = float(h[i]) (w is then 1). vcvtph2ps is exact.
template <bool Add>
__attribute__((target("avx,f16c"))) void from_half_f16c(const uint16_t* h, float w, float* d, int64_t n) {
  const __m256 vw = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    _mm256_storeu_ps(d + i, Add ? _mm256_add_ps(_mm256_loadu_ps(d + i), _mm256_mul_ps(v, vw)) : v);
  }
  for (; i < n; ++i) d[i] = Add ? d[i] + from_half(h[i]) * w : from_half(h[i]);
}
bool has_f16c() {
  static const bool yes = [] {
    __builtin_cpu_init();  // may run before libgcc's own constructor has
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  }();
  return yes;
}
#endif

// out[i] = bits of 16-bit(x[i] / w); w = 1 divides nothing (x/1 is x).
void encode_float(bool fp16, const float* x, float w, uint16_t* out, int64_t n) {
#if CDDP_CAST_F16C
  if (fp16 && has_f16c()) return to_half_f16c(x, w, out, n);
#endif
  auto run = [&](auto conv) {
    if (w == 1.0f) {
      for (int64_t i = 0; i < n; ++i) out[i] = conv(x[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = conv(x[i] / w);
    }
  };
  if (fp16) run(half_bits);
  else run(bf16_bits);
}

// Add: d[i] += w · float(16-bit h[i]), the product exact (an 8- or 11-bit mantissa times W ≤ 2^12),
// as ATen's h.to(float).mul_(W) then add_; else d[i] = float(h[i]), as copy_ (−0 stays −0).
template <bool Add>
void from_16(bool fp16, const uint16_t* h, float w, float* d, int64_t n) {
#if CDDP_CAST_F16C
  if (fp16 && has_f16c()) return from_half_f16c<Add>(h, w, d, n);
#endif
  auto run = [&](auto conv) {
    for (int64_t i = 0; i < n; ++i) d[i] = Add ? d[i] + conv(h[i]) * w : conv(h[i]);
  };
  if (fp16) run(from_half);
  else run(from_bf16);
}

// Any Inf or NaN among 16-bit patterns: the exponent field all ones.
bool any_nonfinite16(const uint16_t* h, int64_t n, uint16_t exponent_mask) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= (h[i] & exponent_mask) == exponent_mask;
  return bad != 0;
}

}  // namespace

Payload CastCompressor::encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) {
  Payload p;
  encode_into(acc, state, ctx, p);
  return p;
}

void CastCompressor::encode_into(const at::Tensor& acc, PluginState&, const CompressContext& ctx, Payload& p) {
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble, "cast: parameter '",
              ctx.param_name, "' is ", acc.scalar_type(), "; expected float32 or float64");
  TORCH_CHECK(ctx.world_size >= 1, "cast: world_size must be >= 1");
  const bool fp16 = wire_ == at::kHalf;
  at::Tensor wire;
  if (acc.is_cpu() && acc.scalar_type() == at::kFloat) {  // one pass: scale, round, pack
    const at::Tensor x = acc.reshape(-1).contiguous();
    wire = reusable_part(p, 0, acc.numel(), wire_);  // last step's 16-bit buffer when it fits
    encode_float(fp16, x.data_ptr<float>(), float(ctx.world_size), static_cast<uint16_t*>(wire.data_ptr()),
                 acc.numel());
  } else {
    at::Tensor scaled = ctx.world_size > 1 ? acc.reshape(-1).div(ctx.world_size) : acc.reshape(-1);
    wire = scaled.to(wire_).contiguous();
  }
  p.numel = acc.numel();
  p.shape = acc.sizes().vec();
  p.dtype = acc.scalar_type();
  p.world_size = ctx.world_size;
  // A finite input that became Inf overflowed the 16-bit range; NaN/Inf in the input is an error too.
  const at::Tensor wire_cpu = wire.is_cpu() ? wire : wire.cpu();
  if (any_nonfinite16(static_cast<const uint16_t*>(wire_cpu.data_ptr()), p.numel, fp16 ? 0x7C00 : 0x7F80)) {
    const bool input_finite = at::isfinite(acc).all().item<bool>();
    TORCH_CHECK(false, "cast: ",
                input_finite ? (fp16 ? "a value overflows fp16 (|x|/W > 65504)" : "a value overflows bf16")
                             : "non-finite value (NaN or Inf)",
                " in parameter '", ctx.param_name, "' at step ", ctx.step);
  }
  p.parts = {wire};
}

void CastCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  TORCH_CHECK(p.parts.size() == 1 && p.parts[0].numel() == p.numel, "cast: payload has the wrong layout");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == p.numel, "cast: decode_add_ needs ", p.numel, " entries");
  const at::Tensor& h = p.parts[0];
  if (dense.is_cpu() && h.is_cpu() && dense.scalar_type() == at::kFloat && h.is_contiguous() &&
      (h.scalar_type() == at::kHalf || h.scalar_type() == at::kBFloat16)) {
    from_16<true>(h.scalar_type() == at::kHalf, static_cast<const uint16_t*>(h.data_ptr()), float(p.world_size),
                  dense.data_ptr<float>(), p.numel);  // D(own) = W · cast(acc / W)
    return;
  }
  at::Tensor d = h.to(dense.scalar_type());
  if (p.world_size > 1) d.mul_(p.world_size);
  dense.view(-1).add_(d);
}

void CastCompressor::decode_sum(const Payload& sum, int, at::Tensor& average) const {
  TORCH_CHECK(sum.parts.size() == 1 && sum.parts[0].numel() == sum.numel, "cast: summed payload has the wrong layout");
  const at::Tensor& h = sum.parts[0];
  if (average.is_cpu() && h.is_cpu() && average.scalar_type() == at::kFloat && average.is_contiguous() &&
      average.numel() == sum.numel && h.is_contiguous() &&
      (h.scalar_type() == at::kHalf || h.scalar_type() == at::kBFloat16)) {
    from_16<false>(h.scalar_type() == at::kHalf, static_cast<const uint16_t*>(h.data_ptr()), 1.0f,
                   average.data_ptr<float>(), sum.numel);
    return;
  }
  average.view(-1).copy_(h);  // Σ_r cast(acc_r / W): already the mean
}

int64_t CastCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return 2 * n;
}

}  // namespace cddp::cast
