// qsgd_compressor.cpp — QsgdCompressor: norms, stochastic levels and their bit packing.
#include "qsgd_compressor.h"

#include "quantizer_support.h"

#include <cmath>

namespace cddp::qsgd {

extern const ParamSpec kQsgdParams[];
extern const size_t kQsgdParamCount;

QsgdCompressor::QsgdCompressor(const ParamMap& params) {
  ParamReader r("qsgd", kQsgdParams, kQsgdParamCount, params);
  levels_ = r.get_int("levels", 16);
  bucket_ = r.get_int("bucket_size", 512);
  int level_bits = 0;
  while ((int64_t{1} << level_bits) < levels_ + 1) ++level_bits;  // ⌈log₂(s+1)⌉
  width_ = 1 + level_bits;
}

Payload QsgdCompressor::encode(const at::Tensor& acc, PluginState&, const CompressContext& ctx) {
  const at::Tensor x = quant::checked_input("qsgd", acc, ctx);
  Payload p = quant::payload_like(acc, ctx);
  const int64_t n = x.numel(), buckets = (n + bucket_ - 1) / bucket_;
  at::Tensor codes = at::zeros({quant::packed_bytes(n, width_)}, at::kByte);
  at::Tensor norms = at::empty({buckets}, at::kFloat);
  const float* v = x.data_ptr<float>();
  float* nb = norms.data_ptr<float>();
  quant::BitWriter out(codes.data_ptr<uint8_t>(), width_);
  quant::Uniforms u(quant::stream_for(ctx, quant::kTagQsgd));
  const double s = double(levels_);
  for (int64_t b = 0; b < buckets; ++b) {
    const int64_t lo = b * bucket_, hi = std::min(n, lo + bucket_);
    double sq = 0;
    for (int64_t i = lo; i < hi; ++i) sq += double(v[i]) * double(v[i]);
    const float norm = float(std::sqrt(sq));  // ‖v‖₂ of the bucket, as it travels
    // Finite entries whose norm exceeds float32 (|v| near 3.4e38) would travel as Inf and decode to NaN.
    TORCH_CHECK(std::isfinite(norm), "qsgd: the norm of bucket ", b, " (entries ", lo, "..", hi - 1,
                ") of parameter '", ctx.param_name, "' at step ", ctx.step, " is ", std::sqrt(sq),
                ", beyond float32's range");
    nb[b] = norm;
    for (int64_t i = lo; i < hi; ++i) {
      const double r = norm > 0 ? std::fabs(double(v[i])) / double(norm) * s : 0.0;  // r_i ∈ [0, s]
      const double floor_r = std::floor(r);
      int64_t level = int64_t(floor_r) + (double(u.at(i)) < r - floor_r ? 1 : 0);  // stochastic rounding
      level = std::min<int64_t>(level, levels_);  // r = s exactly (float rounding of the norm)
      const uint32_t sign = std::signbit(v[i]) ? 1u : 0u;
      out.put(sign | static_cast<uint32_t>(level) << 1);
    }
  }
  p.parts = {codes, norms};
  return p;
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
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t code = in.get();
      const double mag = double(nb[i / bucket_]) * double(code >> 1) / double(levels_);  // ‖v‖₂·ℓ/s
      d[i] += static_cast<scalar_t>((code & 1u) ? -mag : mag);
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
