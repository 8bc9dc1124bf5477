// minmax8_plugin.cpp — an example third-party plugin, written only against the installed
// compressed-ddp package: 8-bit min-max quantization per bucket, a Gather payload (ABI v2).
//
// Per bucket of `bucket_size` entries with lo = min, hi = max:
//   code_i = round((x_i − lo) / (hi − lo) · 255)      one byte an entry
//   D(x)_i = lo + code_i · (hi − lo) / 255            |D(x)_i − x_i| ≤ (hi − lo) / 510
// Wire: n bytes of codes and two float32 (lo, hi) a bucket. The ranks' payloads are combined
// into the mean of their decodes, summed in rank order so that every rank writes the same bits.
// Deterministic rounding to nearest (so biased; error feedback takes the rest); no state.
// It shows what a plugin needs: a class, a parameter schema, one macro, three methods.
#include <cddp/plugin_abi.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace {

const cddp::ParamSpec kParams[] = {
    {"bucket_size", cddp::ParamType::Int, "512", 1, 1 << 30, "entries sharing one (min, max) pair"},
};

class MinMax8 final : public cddp::Compressor {
 public:
  explicit MinMax8(const cddp::ParamMap& params) {
    bucket_ = cddp::ParamReader("minmax8", kParams, 1, params).get_int("bucket_size", 512);
  }
  std::string name() const override { return "minmax8"; }

  cddp::Payload encode(const at::Tensor& acc, cddp::PluginState&, const cddp::CompressContext& ctx) override {
    TORCH_CHECK(acc.is_cpu() && acc.scalar_type() == at::kFloat, "minmax8: parameter '", ctx.param_name,
                "' must be a float32 CPU tensor");
    const at::Tensor x = acc.contiguous().view(-1);
    const int64_t n = x.numel(), buckets = (n + bucket_ - 1) / bucket_;
    TORCH_CHECK(n == 0 || at::isfinite(x).all().item<bool>(), "minmax8: non-finite value in parameter '",
                ctx.param_name, "'");
    at::Tensor codes = at::empty({n}, at::kByte), range = at::empty({2 * buckets}, at::kFloat);
    const float* v = x.data_ptr<float>();
    uint8_t* c = codes.data_ptr<uint8_t>();
    float* r = range.data_ptr<float>();
    for (int64_t b = 0; b < buckets; ++b) {
      const int64_t from = b * bucket_, to = std::min(n, from + bucket_);
      const auto [lo, hi] = std::minmax_element(v + from, v + to);
      r[2 * b] = *lo, r[2 * b + 1] = *hi;
      const float scale = *hi > *lo ? 255.0f / (*hi - *lo) : 0.0f;
      for (int64_t i = from; i < to; ++i) c[i] = static_cast<uint8_t>(std::lround((v[i] - *lo) * scale));
    }
    cddp::Payload p;
    p.numel = n;
    p.shape = acc.sizes().vec();
    p.dtype = acc.scalar_type();
    p.world_size = ctx.world_size;
    p.parts = {codes, range};
    return p;
  }

  void decode_add_(const cddp::Payload& p, at::Tensor& dense) const override {
    TORCH_CHECK(p.parts.size() == 2 && p.parts[0].numel() == p.numel && dense.numel() == p.numel &&
                    dense.scalar_type() == at::kFloat && dense.is_contiguous(),
                "minmax8: payload or output has the wrong layout");
    const uint8_t* c = p.parts[0].data_ptr<uint8_t>();
    const float* r = p.parts[1].data_ptr<float>();
    float* d = dense.data_ptr<float>();
    for (int64_t i = 0; i < p.numel; ++i) {
      const float lo = r[2 * (i / bucket_)], hi = r[2 * (i / bucket_) + 1];
      d[i] += lo + float(c[i]) * ((hi - lo) / 255.0f);
    }
  }

  void combine(const std::vector<cddp::Payload>& ranks, at::Tensor& average) const override {
    average.zero_();
    for (const auto& p : ranks) decode_add_(p, average);
    average.div_(static_cast<double>(ranks.size()));
  }

  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const override {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n + 8 * ((n + bucket_ - 1) / bucket_);
  }

 private:
  int64_t bucket_ = 512;
};

}  // namespace

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(MinMax8, "minmax8", "0.1.0", "example out-of-tree plugin: 8-bit min-max per bucket",
                                 kParams, CDDP_CAPS_GATHER("cpu"))
