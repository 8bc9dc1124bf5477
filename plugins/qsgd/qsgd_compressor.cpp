// qsgd_compressor.cpp — QsgdCompressor: norms, stochastic levels and their bit packing.
#include "qsgd_compressor.h"

#include "quantizer_codes.h"
#include "quantizer_support.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace cddp::qsgd {

extern const ParamSpec kQsgdParams[];
extern const size_t kQsgdParamCount;

QsgdCompressor::QsgdCompressor(const ParamMap& params) {
  ParamReader r("qsgd", kQsgdParams, kQsgdParamCount, params);
  levels_ = r.get_int("levels");
  bucket_ = r.get_int("bucket_size");
  int level_bits = 0;
  while ((int64_t{1} << level_bits) < levels_ + 1) ++level_bits;  // ⌈log₂(s+1)⌉
  width_ = 1 + level_bits;
}

Payload QsgdCompressor::encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) {
  Payload p;
  encode_into(acc, state, ctx, p);
  return p;
}

void QsgdCompressor::encode_into(const at::Tensor& acc, PluginState&, const CompressContext& ctx, Payload& p) {
  // Finiteness rides on the buckets' sums of squares (a NaN or ±Inf makes one non-finite).
  const at::Tensor x = quant::checked_input("qsgd", acc, ctx, /*check_finite=*/false);
  const int64_t n = x.numel(), buckets = (n + bucket_ - 1) / bucket_;
  // Every byte of the codes is stored (BitWriter), every norm written: last step's parts serve.
  at::Tensor codes = reusable_part(p, 0, quant::packed_bytes(n, width_), at::kByte);
  at::Tensor norms = reusable_part(p, 1, buckets, at::kFloat);
  quant::describe_payload(p, acc, ctx);
  const float* v = x.data_ptr<float>();
  float* nb = norms.data_ptr<float>();
  quant::BitWriter out(codes.data_ptr<uint8_t>(), width_);
  quant::Uniforms u(quant::stream_for(ctx, quant::kTagQsgd));
  const double s = double(levels_);
  constexpr int kPiece = 1024;
  uint16_t draw[kPiece];
  uint32_t code[kPiece];
  for (int64_t b = 0; b < buckets; ++b) {
    const int64_t lo = b * bucket_, hi = std::min(n, lo + bucket_);
    const double sq = quant::sum_of_squares(v, lo, hi);  // in its documented fixed order
    if (!std::isfinite(sq)) quant::fail_nonfinite("qsgd", ctx);
    const float norm = float(std::sqrt(sq));              // ‖v‖₂ of the bucket, as it travels
    // Finite entries whose norm exceeds float32 (|v| near 3.4e38) would travel as Inf and decode to NaN.
    TORCH_CHECK(std::isfinite(norm), "qsgd: the norm of bucket ", b, " (entries ", lo, "..", hi - 1,
                ") of parameter '", ctx.param_name, "' at step ", ctx.step, " is ", std::sqrt(sq),
                ", beyond float32's range");
    nb[b] = norm;
    // In pieces of kPiece: the draws, the codes (quantizer_codes.h: level << 1 | sign), the bits.
    for (int64_t i0 = lo; i0 < hi; i0 += kPiece) {
      const int len = static_cast<int>(std::min<int64_t>(kPiece, hi - i0));
      const float* w = v + i0;
      if (norm > 0) {
        u.copy(i0, len, draw);
        quant::qsgd_codes(w, draw, norm, s, len, code);
      } else {  // an all-zero bucket: level 0, and the sign bit of each (±0) entry
        for (int j = 0; j < len; ++j) code[j] = std::signbit(w[j]) ? 1u : 0u;
      }
      out.put_many(code, len);
    }
  }
  out.flush();
  p.parts = {codes, norms};
}

void QsgdCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  const int64_t n = p.numel, buckets = (n + bucket_ - 1) / bucket_;
  TORCH_CHECK(p.parts.size() == 2 && p.parts[0].numel() == quant::packed_bytes(n, width_) &&
                  p.parts[1].numel() == buckets,
              "qsgd: payload does not have this configuration's layout (levels ", levels_, ", bucket_size ", bucket_,
              ")");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == n, "qsgd: decode_add_ needs ", n, " contiguous entries");
  quant::BitReader in(p.parts[0].data_ptr<uint8_t>(), width_);
  const float* nb = p.parts[1].data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES(dense.scalar_type(), "qsgd_decode", [&] {
    scalar_t* d = dense.data_ptr<scalar_t>();
    // What each code decodes to, ±‖v‖₂·ℓ/s, tabulated once a bucket when there are fewer levels
    // than entries: the same double expression either way, so the same bits, and no branch on
    // the (random) sign bit.
    const bool tabulate = levels_ < bucket_;
    std::vector<scalar_t> value(tabulate ? 2 * (levels_ + 1) : 0);
    for (int64_t b = 0; b < buckets; ++b) {
      const int64_t lo = b * bucket_, hi = std::min(n, lo + bucket_);
      const double norm = nb[b];
      if (tabulate) {
        for (int64_t l = 0; l <= levels_; ++l) {
          const double m = norm * double(l) / double(levels_);
          value[2 * l] = static_cast<scalar_t>(m);
          value[2 * l + 1] = static_cast<scalar_t>(-m);
        }
        for (int64_t i = lo; i < hi; ++i) d[i] += value[in.get()];
      } else {
        for (int64_t i = lo; i < hi; ++i) {
          const uint32_t code = in.get();
          const double m = norm * double(code >> 1) / double(levels_);
          d[i] += static_cast<scalar_t>((code & 1u) ? -m : m);
        }
      }
    }
  });
}

void QsgdCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  quant::mean_of_decodes(*this, ranks, average);
}

int64_t QsgdCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  const int64_t n = quant::numel_of(shape);
  return quant::packed_bytes(n, width_) + 4 * ((n + bucket_ - 1) / bucket_);
}

}  // namespace cddp::qsgd
