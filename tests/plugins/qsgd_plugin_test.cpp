// qsgd_plugin_test.cpp — the qsgd plugin, loaded from cddp_qsgd.so: byte counts against
// ceil(n·(1+ceil(log2(s+1)))/8) + 4·ceil(n/d), the codes against a reference built here from
// the header's definition (float32 bucket norms, stochastic rounding with Philox draws keyed by
// seed, step and parameter), unbiasedness and Lemma 3.1's variance bound measured over 1,000
// seeds, determinism without the global generator, the rank-order mean, dtypes, layouts and
// its error messages.
#include <cddp/plugin_loader.h>

#include "payload_test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

using namespace cddp::testing;

namespace {

constexpr uint32_t kTagQsgd = 0x51534744u;  // "QSGD", the stream tag quantizer_support.h documents

class Qsgd : public ::testing::Test {
 protected:
  cddp::PluginLoader loader = build_tree_loader();
  std::shared_ptr<cddp::PluginCompressor> make(int64_t levels, int64_t bucket) {
    return loader.create("qsgd", {{"levels", levels}, {"bucket_size", bucket}});
  }
};

// 1 + ⌈log₂(s+1)⌉, by counting.
int code_bits(int64_t s) {
  int b = 0;
  while ((int64_t{1} << b) < s + 1) ++b;
  return 1 + b;
}

int64_t formula_bytes(int64_t n, int64_t s, int64_t d) {
  return (n * code_bits(s) + 7) / 8 + 4 * ((n + d - 1) / d);
}

// The codes of a payload, read back by hand: `width` bits each, LSB first, back to back.
std::vector<uint32_t> read_codes(const cddp::Payload& p, int width) {
  const at::Tensor bytes = p.parts.at(0).contiguous();
  const uint8_t* b = bytes.data_ptr<uint8_t>();
  std::vector<uint32_t> out(p.numel, 0);
  for (int64_t i = 0; i < p.numel; ++i)
    for (int k = 0; k < width; ++k) {
      const int64_t bit = i * width + k;
      out[i] |= uint32_t((b[bit >> 3] >> (bit & 7)) & 1) << k;
    }
  return out;
}

struct Reference {
  std::vector<uint32_t> codes;  // sign | level << 1
  std::vector<float> norms;
};

// The header's definition, written out: r = |v|/‖v‖·s with the float32 norm, ℓ = ⌊r⌋ + [u < r − ⌊r⌋].
Reference reference(const at::Tensor& x, int64_t s, int64_t d, uint64_t seed, int64_t step, int64_t param) {
  const std::vector<float> v = floats_of(x);
  const int64_t n = int64_t(v.size());
  Reference ref;
  for (int64_t lo = 0; lo < n; lo += d) {
    const int64_t hi = std::min(n, lo + d);
    // Σ v² in the order qsgd documents: entry i into lane (i − lo) mod 8, lanes added pairwise.
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = lo; i < hi; ++i) lane[(i - lo) % 8] += double(v[i]) * double(v[i]);
    const double sq = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    const float norm = float(std::sqrt(sq));
    ref.norms.push_back(norm);
    for (int64_t i = lo; i < hi; ++i) {
      const double r = norm > 0 ? std::fabs(double(v[i])) / double(norm) * double(s) : 0.0;
      const double fl = std::floor(r);
      const double u = philox_uniform(seed, kTagQsgd, step, param, i);
      const int64_t level = std::min<int64_t>(int64_t(fl) + (u < r - fl ? 1 : 0), s);
      ref.codes.push_back((std::signbit(v[i]) ? 1u : 0u) | uint32_t(level) << 1);
    }
  }
  return ref;
}

// Per entry: the exact variance of one draw, (‖v‖/s)²·p(1−p) with p = frac(r), and the step ‖v‖/s.
void moments(const at::Tensor& x, const std::vector<float>& norms, int64_t s, int64_t d, std::vector<double>& sigma2,
             std::vector<double>& step) {
  const std::vector<float> v = floats_of(x);
  sigma2.assign(v.size(), 0);
  step.assign(v.size(), 0);
  for (size_t i = 0; i < v.size(); ++i) {
    const double norm = norms[i / d], r = norm > 0 ? std::fabs(double(v[i])) / norm * double(s) : 0;
    const double p = r - std::floor(r), q = norm / double(s);
    sigma2[i] = q * q * p * (1 - p);
    step[i] = q;
  }
}

TEST_F(Qsgd, IsAGatherPayloadWithoutSelection) {
  auto c = make(16, 512);
  EXPECT_EQ(c->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_FALSE(c->caps().selection);
}

TEST_F(Qsgd, CodeWidthsByHand) {
  // s = 1: 2 bits; 2, 3: 3 bits; 4..7: 4 bits; 15: 5 bits; 16 (the default) .. 31: 6 bits; 2^20: 22 bits.
  const std::pair<int64_t, int> widths[] = {{1, 2}, {2, 3}, {3, 3}, {4, 4}, {7, 4}, {8, 5}, {15, 5},
                                            {16, 6}, {31, 6}, {32, 7}, {255, 9}, {256, 10}, {1 << 20, 22}};
  for (auto [s, w] : widths) {
    EXPECT_EQ(code_bits(s), w) << s;
    EXPECT_EQ(make(s, 1 << 30)->wire_bytes({8}, at::kFloat, -1), w + 4) << "s=" << s;
  }
}

TEST_F(Qsgd, WireBytesFollowTheFormula) {
  const std::pair<int64_t, int64_t> configs[] = {{1, 512}, {2, 7}, {3, 8}, {16, 512}, {16, 5}, {255, 100}, {256, 3},
                                                 {1 << 20, 1}};
  for (auto [s, d] : configs) {
    auto c = make(s, d);
    for (int64_t n : {0, 1, 7, 8, 9, 10, 511, 513, 1000, 1025}) {
      const int64_t f = formula_bytes(n, s, d);
      cddp::Payload p = encode(*c, at::randn({n}), payload_ctx());
      EXPECT_EQ(p.wire_bytes(), f) << "s=" << s << " d=" << d << " n=" << n;
      EXPECT_EQ(c->wire_bytes({n}, at::kFloat, -1), f) << "s=" << s << " d=" << d << " n=" << n;
    }
  }
  EXPECT_EQ(make(16, 512)->wire_bytes({40, 25}, at::kDouble, -1), formula_bytes(1000, 16, 512));
  EXPECT_EQ(loader.create("qsgd")->wire_bytes({1000}, at::kFloat, -1), formula_bytes(1000, 16, 512))
      << "defaults: levels 16, bucket_size 512";
}

TEST_F(Qsgd, CodesAndNormsMatchTheReferenceAndDecodeByTheDefinition) {
  const std::pair<int64_t, int64_t> configs[] = {{1, 64}, {4, 100}, {16, 512}, {255, 33}};
  for (auto [s, d] : configs) {
    auto c = make(s, d);
    const int64_t n = 1001;
    at::Tensor x = at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(s + d));
    x[5] = -0.0f;
    x[6] = 0.0f;
    const uint64_t seed = 0x123456789abcull;
    cddp::Payload p = encode(*c, x, payload_ctx(seed, 17, 3));
    const Reference ref = reference(x, s, d, seed, 17, 3);
    ASSERT_EQ(p.parts.size(), 2u);
    EXPECT_EQ(floats_of(p.parts[1]), ref.norms) << "s=" << s;
    ASSERT_EQ(read_codes(p, code_bits(s)), ref.codes) << "s=" << s << " d=" << d;
    const std::vector<float> dec = floats_of(decode(*c, p));
    for (int64_t i = 0; i < n; ++i) {
      const double mag = double(ref.norms[i / d]) * double(ref.codes[i] >> 1) / double(s);
      ASSERT_EQ(dec[i], float((ref.codes[i] & 1) ? -mag : mag)) << "s=" << s << " i=" << i;
    }
  }
}

TEST_F(Qsgd, UnbiasedOverAThousandSeeds) {
  // Coarse and fine levels, a bucket not dividing n, and entries of both signs and zero.
  const std::pair<int64_t, int64_t> configs[] = {{1, 50}, {4, 64}, {16, 512}};
  const int S = 1000;
  for (auto [s, d] : configs) {
    auto c = make(s, d);
    at::Tensor x = at::randn({700}, at::make_generator<at::CPUGeneratorImpl>(99));
    x[0] = 0.0f;
    const std::vector<float> norms = floats_of(encode(*c, x, payload_ctx()).parts[1]);
    std::vector<double> sigma2, step;
    moments(x, norms, s, d, sigma2, step);
    const BiasReport r = measure_bias(
        [&](uint64_t seed) { return decode(*c, encode(*c, x, payload_ctx(seed, 1, 0))); }, x, sigma2, step, S);
    EXPECT_EQ(r.violations, 0) << "s=" << s << " d=" << d << ": " << r.first << " (worst " << r.worst_ratio << ")";
    EXPECT_LE(std::fabs(r.total_bias), 5 * r.total_sigma)
        << "s=" << s << ": the entries lean one way: Σ sign(x)(mean − x) = " << r.total_bias;
  }
}

TEST_F(Qsgd, VarianceWithinLemma31AndAsPredicted) {
  // Alistarh et al. 2017, Lemma 3.1: E‖Q(v) − v‖² ≤ min(d/s², √d/s)·‖v‖² per bucket of d entries.
  // Measured over S seeds, per bucket. The measured mean must also agree with the exact
  // expectation Σ_i (‖v‖/s)²·p_i(1 − p_i) to within 5 standard errors (the sample's own).
  struct Case {
    const char* what;
    at::Tensor x;
    int64_t s, d;
  };
  const Case cases[] = {
      {"gaussian, s=16, d=512, n=1300", at::randn({1300}, at::make_generator<at::CPUGeneratorImpl>(1)), 16, 512},
      {"gaussian, s=2, d=9, n=100", at::randn({100}, at::make_generator<at::CPUGeneratorImpl>(2)), 2, 9},
      // All entries equal with s = 1: E‖Q−v‖² = d(√d − 1) against the bound d·√d, near-tight.
      {"ones, s=1, d=64", at::ones({192}), 1, 64},
  };
  const int S = 1000;
  for (const Case& k : cases) {
    auto c = make(k.s, k.d);
    const int64_t n = k.x.numel(), buckets = (n + k.d - 1) / k.d;
    const std::vector<float> v = floats_of(k.x);
    const std::vector<float> norms = floats_of(encode(*c, k.x, payload_ctx()).parts[1]);
    std::vector<double> sigma2, step;
    moments(k.x, norms, k.s, k.d, sigma2, step);
    std::vector<double> sum(buckets, 0), sum_sq(buckets, 0);
    for (int seed = 0; seed < S; ++seed) {
      const std::vector<float> q = floats_of(decode(*c, encode(*c, k.x, payload_ctx(seed, 1, 0))));
      std::vector<double> err(buckets, 0);
      for (int64_t i = 0; i < n; ++i) err[i / k.d] += (double(q[i]) - v[i]) * (double(q[i]) - v[i]);
      for (int64_t b = 0; b < buckets; ++b) sum[b] += err[b], sum_sq[b] += err[b] * err[b];
    }
    for (int64_t b = 0; b < buckets; ++b) {
      const int64_t lo = b * k.d, hi = std::min(n, lo + k.d), db = hi - lo;
      double norm2 = 0, expected = 0;
      for (int64_t i = lo; i < hi; ++i) norm2 += double(v[i]) * v[i], expected += sigma2[i];
      const double bound = std::min(double(db) / double(k.s * k.s), std::sqrt(double(db)) / double(k.s)) * norm2;
      const double mean = sum[b] / S, se = std::sqrt(std::max(0.0, sum_sq[b] / S - mean * mean) / S);
      EXPECT_LE(mean, bound) << k.what << " bucket " << b;
      EXPECT_LE(expected, bound) << k.what << " bucket " << b << ": the exact variance itself";
      EXPECT_NEAR(mean, expected, 5 * se + 1e-9 * norm2) << k.what << " bucket " << b;
    }
  }
}

TEST_F(Qsgd, SeedsStepsAndParametersDrawDifferentlyTheSameSeedGivesTheSameBits) {
  auto c = make(4, 128);
  at::Tensor x = at::randn({1000}, at::make_generator<at::CPUGeneratorImpl>(3));
  expect_draws_keyed_by_seed_step_parameter(*c, *make(4, 128), x);
  const auto base = bytes_of(encode(*c, x, payload_ctx(42, 5, 2)));
  EXPECT_NE(bytes_of(encode(*c, x, payload_ctx(42ull | (1ull << 40), 5, 2))), base) << "high word of the seed";
}

TEST_F(Qsgd, CombineIsTheMeanOfDecodesInRankOrderBitwise) {
  auto c = make(8, 100);
  expect_combine_is_rank_order_mean(*c, [](int W, int r) {
    return at::randn({1001}, at::make_generator<at::CPUGeneratorImpl>(W * 10 + r)).mul_(r + 1);
  });
}

TEST_F(Qsgd, ZeroBucketsDecodeToZeroAndTheMostLevelsStayWithinOneStep) {
  auto c = make(16, 8);
  at::Tensor x = at::zeros({20});
  x[17] = 3.0f;  // buckets 0 and 1 all zero, bucket 2 one entry
  cddp::Payload p = encode(*c, x, payload_ctx(1));
  EXPECT_EQ(floats_of(p.parts[1]), (std::vector<float>{0.f, 0.f, 3.f}));
  EXPECT_TRUE(at::equal(decode(*c, p), x)) << "a lone entry is its bucket's norm: level s exactly";

  auto fine = make(1 << 20, 1000);
  at::Tensor y = at::randn({1000}, at::make_generator<at::CPUGeneratorImpl>(8));
  cddp::Payload q = encode(*fine, y, payload_ctx(2));
  const double step = double(floats_of(q.parts[1])[0]) / double(1 << 20);
  EXPECT_LE((decode(*fine, q) - y).abs().max().item<float>(), step * (1 + 1e-6));
}

TEST_F(Qsgd, Float64NonContiguousAndEmptyInputs) {
  auto c = make(16, 64);
  at::Tensor x = at::randn({10, 30}, at::make_generator<at::CPUGeneratorImpl>(4));
  const cddp::Payload d = expect_float64_noncontiguous_and_empty(*c, x, 0);
  EXPECT_TRUE(at::allclose(decode(*c, d, at::kDouble), decode(*c, d).to(at::kDouble), 1e-6, 1e-7));
}

TEST_F(Qsgd, NonFiniteValuesNameTheParameter) {
  auto c = make(16, 512);
  expect_nonfinite_names_parameter(*c, "qsgd", "layer.w", 4);
}

TEST_F(Qsgd, AFiniteBucketWhoseNormOverflowsFloat32IsAnErrorNotNaN) {
  // ‖(3e38, 3e38)‖₂ = 4.2e38 does not fit the float32 norm on the wire.
  auto c = make(16, 512);
  at::Tensor x = at::tensor({3e38f, 3e38f, 1.f});
  const std::string msg = error_of([&] { encode(*c, x, payload_ctx(0, 2, 0, 1, "big")); });
  EXPECT_NE(msg.find("qsgd: the norm of bucket 0 (entries 0..2) of parameter 'big' at step 2 is 4.24"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("beyond float32's range"), std::string::npos) << msg;
  // Two such values in different buckets are fine.
  auto small = make(16, 1);
  EXPECT_TRUE(at::isfinite(decode(*small, encode(*small, x, payload_ctx()))).all().item<bool>());
}

TEST_F(Qsgd, RefusesIntegerTensors) {
  auto c = make(16, 512);
  const std::string msg = error_of([&] { encode(*c, at::ones({3}, at::kInt), payload_ctx(0, 1, 0, 1, "b")); });
  EXPECT_NE(msg.find("qsgd: parameter 'b' is Int; expected float32 or float64"), std::string::npos) << msg;
}

TEST_F(Qsgd, BadParametersNameThePluginAndTheParameter) {
  const std::pair<cddp::ParamMap, std::string> bad[] = {
      {{{"levels", int64_t{0}}}, "plugin 'qsgd': parameter 'levels' = 0 is out of range"},
      {{{"levels", int64_t{-3}}}, "plugin 'qsgd': parameter 'levels' = -3 is out of range"},
      {{{"levels", int64_t{(1 << 20) + 1}}}, "plugin 'qsgd': parameter 'levels' = 1048577 is out of range"},
      {{{"levels", 2.5}}, "plugin 'qsgd': parameter 'levels' must be a integer, got float 2.5"},
      {{{"bucket_size", int64_t{0}}}, "plugin 'qsgd': parameter 'bucket_size' = 0 is out of range"},
      {{{"bucket_size", std::string("all")}}, "plugin 'qsgd': parameter 'bucket_size' must be a integer"},
      {{{"ratio", 0.01}}, "plugin 'qsgd': unknown parameter 'ratio'; expected one of: levels, bucket_size"},
  };
  for (const auto& [params, expect] : bad) {
    const std::string msg = error_of([&] { loader.create("qsgd", params); });
    EXPECT_NE(msg.find(expect), std::string::npos) << msg;
  }
}

TEST_F(Qsgd, APayloadOfAnotherConfigurationIsRefused) {
  auto a = make(16, 512), b = make(4, 512);
  cddp::Payload p = encode(*a, at::randn({100}), payload_ctx());
  at::Tensor d = at::zeros({100});
  const std::string msg = error_of([&] { b->decode_add_(p, d); });
  EXPECT_NE(msg.find("qsgd: payload does not have this configuration's layout (levels 4, bucket_size 512)"),
            std::string::npos)
      << msg;
  std::vector<cddp::Payload> mixed{encode(*a, at::randn({16}), payload_ctx()), encode(*a, at::randn({8}), payload_ctx())};
  at::Tensor avg = at::empty({16});
  EXPECT_NE(error_of([&] { a->combine(mixed, avg); }).find("qsgd: "), std::string::npos);
}

}  // namespace

TEST_F(Qsgd, EncodeIntoWritesLastStepsBuffersWithTheSameBits) {
  auto c = make(16, 512);
  cddp::testing::expect_encode_into_reuses_buffers(*c, at::randn({4099}), at::randn({17}));
}
