// sign_compressor.cpp — SignCompressor: packing signs and scales in one pass, decoding them,
// and the two aggregates (majority vote; mean in rank order).
#include "sign_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cddp::sign {

extern const ParamSpec kSignParams[];
extern const size_t kSignParamCount;

namespace {

Variant parse_variant(const ParamReader& r) {
  const std::string v = r.get_string("variant");
  if (v == "signsgd") return Variant::SignSgd;
  if (v == "scaled") return Variant::Scaled;
  if (v == "onebit") return Variant::OneBit;
  r.fail("parameter 'variant' = \"" + v + "\" is not one of \"signsgd\", \"scaled\", \"onebit\"");
}

bool bit(const uint8_t* bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

// The value entry i decodes to: ±1 (signsgd), ±s (scaled), a+ or a− (onebit).
struct Reader {
  const uint8_t* bits;
  double pos, neg;
  double at(int64_t i) const { return bit(bits, i) ? pos : neg; }
};

Reader reader_of(const Payload& p, Variant v) {
  Reader r{p.parts[0].data_ptr<uint8_t>(), 1.0, -1.0};
  if (v == Variant::Scaled) {
    const float s = p.parts[1].data_ptr<float>()[0];
    r.pos = s, r.neg = -s;
  } else if (v == Variant::OneBit) {
    r.pos = p.parts[1].data_ptr<float>()[0], r.neg = p.parts[1].data_ptr<float>()[1];
  }
  return r;
}

void check_payload(const Payload& p, Variant v, const char* where) {
  TORCH_CHECK(p.parts.size() == (v == Variant::SignSgd ? 1u : 2u) && p.parts[0].scalar_type() == at::kByte &&
                  p.parts[0].numel() == (p.numel + 7) / 8 &&
                  (v == Variant::SignSgd || p.parts[1].numel() == SignCompressor::scale_count(v)),
              "sign: ", where, ": payload does not have this variant's layout (", p.parts.size(), " parts)");
}

// A sum of doubles in a fixed order that vectorises (‖x‖₁ and the side sums were summed strictly
// in index order, one dependent add after another: 4× a read pass): entry i adds into lane i mod 8
// of its block of kBlock entries; fold() adds a block's lanes pairwise,
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), onto the total, blocks in index order. It is
// deterministic and the same on every CPU and for any thread count, which is all a scale needs:
// each rank sends its own, and every rank decodes that one.
struct BlockedSum {
  static constexpr int64_t kBlock = 1024;  // a power of two, a multiple of 8
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  double total = 0;
  void fold() {
    total += ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (double& l : lane) l = 0;
  }
};

}  // namespace

SignCompressor::SignCompressor(const ParamMap& params) {
  ParamReader r("sign", kSignParams, kSignParamCount, params);
  variant_ = parse_variant(r);
}

Payload SignCompressor::encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) {
  Payload p;
  encode_into(acc, state, ctx, p);
  return p;
}

void SignCompressor::encode_into(const at::Tensor& acc_in, PluginState&, const CompressContext& ctx, Payload& p) {
  TORCH_CHECK(acc_in.is_cpu(), "sign: parameter '", ctx.param_name, "' is on ", acc_in.device(), "; sign runs on CPU");
  TORCH_CHECK(acc_in.scalar_type() == at::kFloat || acc_in.scalar_type() == at::kDouble, "sign: parameter '",
              ctx.param_name, "' is ", acc_in.scalar_type(), "; expected float32 or float64");
  const at::Tensor acc = acc_in.contiguous();
  const int64_t n = acc.numel();
  at::Tensor bits = reusable_part(p, 0, (n + 7) / 8, at::kByte);  // every byte is written below
  at::Tensor scales = variant_ == Variant::SignSgd ? at::Tensor() : reusable_part(p, 1, scale_count(variant_), at::kFloat);
  p.numel = n;
  p.shape = acc.sizes().vec();
  p.dtype = acc.scalar_type();
  p.world_size = ctx.world_size;
  uint8_t* b = bits.data_ptr<uint8_t>();
  double l1 = 0, pos_sum = 0, neg_sum = 0;
  int64_t pos_n = 0;
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "sign_encode", [&] {
    const scalar_t* x = acc.data_ptr<scalar_t>();
    // One pass: signs 8 to a byte, finiteness, and only the sums this variant sends (‖x‖₁ for
    // scaled; each side's sum for onebit), in double, in BlockedSum's fixed order. Branch-free: an
    // entry of the other side adds v·0 = ±0, and s + ±0 = s unless s = −0, which neither sum
    // (starting at +0) can become: the bits are those of summing one side's entries only.
    auto run = [&](auto need_l1, auto need_sides) {
      constexpr bool kL1 = decltype(need_l1)::value, kSides = decltype(need_sides)::value;
      BlockedSum l1s, pos_s, neg_s;
      // The sums of entries i0 + k, k < len (i0 % 8 == 0), whose signs are bits k of `up`.
      auto add_sums = [&](int64_t i0, uint32_t up, int len) {
        for (int k = 0; k < len; ++k) {
          const double v = static_cast<double>(x[i0 + k]);
          if constexpr (kL1) l1s.lane[k] += std::fabs(v);
          if constexpr (kSides) {
            const double side = static_cast<double>((up >> k) & 1u);  // from the sign mask: no branch
            pos_s.lane[k] += v * side;
            neg_s.lane[k] += v * (1.0 - side);
          }
        }
        if constexpr (kSides) pos_n += __builtin_popcount(up & ((1u << len) - 1u));
        if (((i0 + 8) & (BlockedSum::kBlock - 1)) == 0) l1s.fold(), pos_s.fold(), neg_s.fold();
      };
      int ok = 1;
      auto signs = [&](int64_t i0, int len) {  // bit k: x[i0 + k] ≥ 0, −0 included
        uint32_t up = 0;
        for (int k = 0; k < len; ++k) {
          const double v = static_cast<double>(x[i0 + k]);
          ok &= std::fabs(v) <= std::numeric_limits<double>::max();
          up |= (v < 0 ? 0u : 1u) << k;
        }
        return up;
      };
      int64_t i0 = 0;
#if defined(__SSE2__)
      if constexpr (std::is_same_v<scalar_t, float>) {  // the signs and the check 8 at a time
        const __m128 zero = _mm_setzero_ps(), top = _mm_set1_ps(std::numeric_limits<float>::max());
        const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7FFFFFFF));
        __m128 fin = _mm_castsi128_ps(_mm_set1_epi32(-1));
        const float* xf = reinterpret_cast<const float*>(x);  // scalar_t is float here
        for (; i0 + 8 <= n; i0 += 8) {
          const __m128 lo = _mm_loadu_ps(xf + i0), hi = _mm_loadu_ps(xf + i0 + 4);
          const int down = _mm_movemask_ps(_mm_cmplt_ps(lo, zero)) | _mm_movemask_ps(_mm_cmplt_ps(hi, zero)) << 4;
          fin = _mm_and_ps(fin, _mm_and_ps(_mm_cmple_ps(_mm_and_ps(lo, abs_mask), top),
                                           _mm_cmple_ps(_mm_and_ps(hi, abs_mask), top)));
          const uint32_t up = ~uint32_t(down) & 0xFFu;
          b[i0 >> 3] = static_cast<uint8_t>(up);
          if constexpr (kL1 || kSides) add_sums(i0, up, 8);
        }
        ok &= _mm_movemask_ps(fin) == 0xF;
      }
#endif
      for (; i0 + 8 <= n; i0 += 8) {
        const uint32_t up = signs(i0, 8);
        b[i0 >> 3] = static_cast<uint8_t>(up);
        if constexpr (kL1 || kSides) add_sums(i0, up, 8);
      }
      if (i0 < n) {
        const int len = static_cast<int>(n - i0);
        const uint32_t up = signs(i0, len);
        b[i0 >> 3] = static_cast<uint8_t>(up);
        if constexpr (kL1 || kSides) add_sums(i0, up, len);
      }
      l1s.fold(), pos_s.fold(), neg_s.fold();
      l1 = l1s.total, pos_sum = pos_s.total, neg_sum = neg_s.total;
      finite = ok != 0;
    };
    using T = std::true_type;
    using F = std::false_type;
    if (variant_ == Variant::Scaled) run(T{}, F{});
    else if (variant_ == Variant::OneBit) run(F{}, T{});
    else run(F{}, F{});
  });
  TORCH_CHECK(finite, "sign: non-finite value (NaN or Inf) in parameter '", ctx.param_name, "' at step ", ctx.step);
  p.parts = {bits};
  if (variant_ == Variant::Scaled) {
    scales.data_ptr<float>()[0] = n ? float(l1 / double(n)) : 0.0f;  // ‖x‖₁/n
    p.parts.push_back(scales);
  } else if (variant_ == Variant::OneBit) {
    float* s = scales.data_ptr<float>();
    s[0] = pos_n ? float(pos_sum / double(pos_n)) : 0.0f;         // a+ = mean of x ≥ 0
    s[1] = n - pos_n ? float(neg_sum / double(n - pos_n)) : 0.0f;  // a− = mean of x < 0
    p.parts.push_back(scales);
  }
}

void SignCompressor::decode_add_(const Payload& p, at::Tensor& dense) const {
  check_payload(p, variant_, "decode_add_");
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == p.numel, "sign: decode_add_ needs a contiguous tensor of ",
              p.numel, " entries");
  const Reader r = reader_of(p, variant_);
  AT_DISPATCH_FLOATING_TYPES(dense.scalar_type(), "sign_decode", [&] {
    scalar_t* d = dense.data_ptr<scalar_t>();
    // A byte at a time, from a table of the 8 values each byte decodes to.
    std::vector<scalar_t> table(256 * 8);
    for (int byte = 0; byte < 256; ++byte)
      for (int k = 0; k < 8; ++k) table[8 * byte + k] = static_cast<scalar_t>(((byte >> k) & 1) ? r.pos : r.neg);
    const int64_t n = p.numel;
    int64_t i0 = 0;
    for (; i0 + 8 <= n; i0 += 8) {
      const scalar_t* t = &table[8 * r.bits[i0 >> 3]];
      for (int k = 0; k < 8; ++k) d[i0 + k] += t[k];
    }
    for (; i0 < n; ++i0) d[i0] += table[8 * r.bits[i0 >> 3] + (i0 & 7)];
  });
}

void SignCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  TORCH_CHECK(!ranks.empty(), "sign: combine of no ranks");
  for (const auto& p : ranks) check_payload(p, variant_, "combine");
  const int64_t n = ranks[0].numel;
  for (size_t r = 1; r < ranks.size(); ++r)  // the readers below index every rank's bits up to n
    TORCH_CHECK(ranks[r].numel == n, "sign: combine: rank ", r, "'s payload has ", ranks[r].numel,
                " entries, rank 0's ", n);
  TORCH_CHECK(average.is_contiguous() && average.numel() == n, "sign: combine needs a contiguous output of ", n,
              " entries");
  std::vector<Reader> readers;
  for (const auto& p : ranks) readers.push_back(reader_of(p, variant_));
  const double world = double(ranks.size());
  AT_DISPATCH_FLOATING_TYPES(average.scalar_type(), "sign_combine", [&] {
    scalar_t* a = average.data_ptr<scalar_t>();
    if (variant_ == Variant::SignSgd) {  // majority vote: sign(Σ_r sign_r), 0 on a tie
      for (int64_t i = 0; i < n; ++i) {
        int votes = 0;
        for (const auto& r : readers) votes += bit(r.bits, i) ? 1 : -1;
        a[i] = static_cast<scalar_t>((votes > 0) - (votes < 0));
      }
      return;
    }
    for (int64_t i = 0; i < n; ++i) {  // the mean of D(x_r), summed in rank order
      scalar_t sum = 0;
      for (const auto& r : readers) sum += static_cast<scalar_t>(r.at(i));
      a[i] = sum / static_cast<scalar_t>(world);
    }
  });
}

int64_t SignCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return (n + 7) / 8 + 4 * scale_count(variant_);
}

}  // namespace cddp::sign
