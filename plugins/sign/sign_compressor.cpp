// sign_compressor.cpp — SignCompressor: packing signs and scales in one pass, decoding them,
// and the two aggregates (majority vote; mean in rank order).
#include "sign_compressor.h"

#include "sign_codes.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <vector>

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

// The variant's pass (plugins/common/sign_codes.h: signs, finiteness, and only the sums it sends).
template <class T>
bool sign_pass(const T* x, int64_t n, uint8_t* bits, Variant v, sign_codes::SignSums& sums) {
  return v == Variant::Scaled   ? sign_codes::sign_bits_l1(x, n, bits, sums)
         : v == Variant::OneBit ? sign_codes::sign_bits_sides(x, n, bits, sums)
                                : sign_codes::sign_bits(x, n, bits);
}

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
  // One pass: signs 8 to a byte, finiteness, and only the sums this variant sends (‖x‖₁ for
  // scaled; each side's sum for onebit), in double, in sign_codes.h's fixed order.
  sign_codes::SignSums sums;
  const bool finite = acc.scalar_type() == at::kFloat ? sign_pass(acc.data_ptr<float>(), n, b, variant_, sums)
                                                      : sign_pass(acc.data_ptr<double>(), n, b, variant_, sums);
  TORCH_CHECK(finite, "sign: non-finite value (NaN or Inf) in parameter '", ctx.param_name, "' at step ", ctx.step);
  p.parts = {bits};
  if (variant_ == Variant::Scaled) {
    scales.data_ptr<float>()[0] = n ? float(sums.l1 / double(n)) : 0.0f;  // ‖x‖₁/n
    p.parts.push_back(scales);
  } else if (variant_ == Variant::OneBit) {
    float* s = scales.data_ptr<float>();
    s[0] = sums.pos_n ? float(sums.pos / double(sums.pos_n)) : 0.0f;             // a+ = mean of x ≥ 0
    s[1] = n - sums.pos_n ? float(sums.neg / double(n - sums.pos_n)) : 0.0f;  // a− = mean of x < 0
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
