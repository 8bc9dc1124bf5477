// natural_plugin_test.cpp — the natural plugin, loaded from cddp_natural.so: byte counts
// against ceil(9n/8), the codes (sign, float32 exponent field) against a reference built
// here from the header's definition with Philox draws keyed by seed, step and parameter, exact
// powers of two sent exactly, subnormals, unbiasedness over 1,000 seeds with
// Var = 4^E·f(1 − f) ≤ x²/8, determinism without the global generator, the rank-order mean,
// dtypes, layouts and its error messages.
#include <cddp/plugin_loader.h>

#include "payload_test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

using namespace cddp::testing;

namespace {

constexpr uint32_t kTagNatural = 0x4E415455u;  // "NATU"
const double kMinNormal = std::ldexp(1.0, -126);

class Natural : public ::testing::Test {
 protected:
  cddp::PluginLoader loader = build_tree_loader();
  std::shared_ptr<cddp::PluginCompressor> c = loader.create("natural");
};

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Entry i's code sign << 8 | e from the wire layout: its exponent byte at i, its sign at bit
// i mod 8 of byte n + i/8.
std::vector<uint32_t> read_codes(const cddp::Payload& p) {
  const at::Tensor bytes = p.parts.at(0).contiguous();
  const uint8_t* b = bytes.data_ptr<uint8_t>();
  const int64_t n = p.numel;
  EXPECT_EQ(bytes.numel(), n + (n + 7) / 8);
  std::vector<uint32_t> out(n, 0);
  for (int64_t i = 0; i < n; ++i) out[i] = uint32_t((b[n + i / 8] >> (i % 8)) & 1) << 8 | b[i];
  return out;
}

// The lower neighbour 2^E of |x| (2^−126's lower neighbour is 0: then the step is 2^−126).
double step_below(float x) {
  const double a = std::fabs(double(x));
  if (a < kMinNormal) return kMinNormal;
  int e;
  std::frexp(a, &e);  // a = m·2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1);
}

// Per entry: the exact variance of one draw and the distance between the two neighbours.
void moments(const std::vector<float>& v, std::vector<double>& sigma2, std::vector<double>& range) {
  sigma2.clear();
  range.clear();
  for (float x : v) {
    const double a = std::fabs(double(x)), lo_step = step_below(x);
    const double lo = a < kMinNormal ? 0.0 : lo_step;
    const double p = (a - lo) / lo_step;  // probability of rounding up
    sigma2.push_back(lo_step * lo_step * p * (1 - p));
    range.push_back(lo_step);
  }
}

// Values over many binades, both signs, a few subnormals and zeros.
at::Tensor spread_values(int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor x = at::randn({n}, gen).mul_(at::exp2(at::randint(-20, 20, {n}, gen).to(at::kFloat)));
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = std::numeric_limits<float>::denorm_min() * 3;
  x[3] = -float(kMinNormal) * 0.7f;
  x[4] = 4.0f / 3;  // f = 1/3: the variance bound x²/8 is attained
  return x;
}

TEST_F(Natural, IsAGatherPayloadWithoutSelection) {
  EXPECT_EQ(c->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_FALSE(c->caps().selection);
}

TEST_F(Natural, WireBytesAreCeilNineNOver8) {
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 1001, 4099}) {
    const int64_t f = (9 * n + 7) / 8;
    cddp::Payload p = encode(*c, at::randn({n}), payload_ctx());
    EXPECT_EQ(p.wire_bytes(), f) << "n=" << n;
    EXPECT_EQ(c->wire_bytes({n}, at::kFloat, -1), f) << "n=" << n;
  }
  EXPECT_EQ(c->wire_bytes({4, 4}, at::kDouble, -1), 18);
}

TEST_F(Natural, CodesMatchTheReferenceAndDecodeToAPowerOfTwoNeighbour) {
  const int64_t n = 2003;
  at::Tensor x = spread_values(n, 31);
  const std::vector<float> v = floats_of(x);
  const uint64_t seed = 0xabcdef0123ull;
  cddp::Payload p = encode(*c, x, payload_ctx(seed, 11, 6));
  ASSERT_EQ(p.parts.size(), 1u);
  const std::vector<uint32_t> codes = read_codes(p);
  const std::vector<float> dec = floats_of(decode(*c, p));
  // n = 2003: the last sign byte holds 3 signs, and its other bits are 0 (the wire is a function of x).
  EXPECT_EQ(p.parts[0][p.parts[0].numel() - 1].item<uint8_t>() >> (n % 8), 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = bits_of(v[i]), sign = b >> 31, exponent = (b >> 23) & 0xFF, mantissa = b & 0x7FFFFF;
    const double u = philox_uniform(seed, kTagNatural, 11, 6, i);
    uint32_t e = exponent;
    if (exponent == 0) e = (mantissa != 0 && u < std::fabs(double(v[i])) / kMinNormal) ? 1 : 0;
    else if (mantissa != 0) e = std::min<uint32_t>(exponent + (u < double(mantissa) / 8388608.0 ? 1 : 0), 254);
    ASSERT_EQ(codes[i], sign << 8 | e) << "i=" << i << " x=" << v[i];
    // D is ±2^(e−127) (or 0), one of the two powers of two around x.
    const double a = std::fabs(double(v[i])), lo = a < kMinNormal ? 0.0 : step_below(v[i]);
    const double d = std::fabs(double(dec[i]));
    ASSERT_TRUE(d == lo || d == (a < kMinNormal ? kMinNormal : 2 * lo)) << "i=" << i << " x=" << v[i] << " D=" << dec[i];
    if (d != 0) ASSERT_EQ(std::signbit(dec[i]), std::signbit(v[i])) << i;
  }
}

TEST_F(Natural, ExactPowersOfTwoAndZerosAreSentExactly) {
  std::vector<float> v{0.f, -0.f};
  for (int k = -126; k <= 127; ++k) v.push_back(std::ldexp(1.f, k)), v.push_back(-std::ldexp(1.f, k));
  at::Tensor x = at::tensor(v);
  for (uint64_t seed = 0; seed < 20; ++seed)
    ASSERT_TRUE(at::equal(decode(*c, encode(*c, x, payload_ctx(seed, seed + 1, 0))), x)) << "seed " << seed;
}

TEST_F(Natural, TheTopBinadeStaysAtTwoTo127) {
  // Documented: rounding up from [2^127, 2^128) would be Inf, so it stays at 2^127.
  at::Tensor x = at::tensor({1.5f * std::ldexp(1.f, 127), -std::numeric_limits<float>::max()});
  for (uint64_t seed = 0; seed < 20; ++seed)
    ASSERT_TRUE(at::equal(decode(*c, encode(*c, x, payload_ctx(seed))),
                          at::tensor({std::ldexp(1.f, 127), -std::ldexp(1.f, 127)})));
}

TEST_F(Natural, UnbiasedOverAThousandSeedsSubnormalsIncluded) {
  const int S = 1000;
  at::Tensor x = spread_values(500, 77);
  const std::vector<float> v = floats_of(x);
  std::vector<double> sigma2, range;
  moments(v, sigma2, range);
  for (size_t i = 0; i < v.size(); ++i)
    if (std::fabs(v[i]) >= kMinNormal)
      ASSERT_LE(sigma2[i], double(v[i]) * v[i] / 8 * (1 + 1e-12)) << "Theorem 1's x²/8, entry " << i;
  const BiasReport r =
      measure_bias([&](uint64_t seed) { return decode(*c, encode(*c, x, payload_ctx(seed, 2, 0))); }, x, sigma2, range, S);
  EXPECT_EQ(r.violations, 0) << r.first << " (worst " << r.worst_ratio << ")";
  EXPECT_LE(std::fabs(r.total_bias), 5 * r.total_sigma) << "Σ sign(x)(mean − x) = " << r.total_bias;
}

TEST_F(Natural, MeasuredVarianceWithinAnEighthOfTheSquare) {
  // Horváth et al. 2019, Theorem 1: E(C(x) − x)² ≤ x²/8. Measured over S seeds on 1,000 entries
  // all at f = 1/3 of their binade, where the bound is attained, and on Gaussian entries, where it
  // is not: the total must not exceed Σx²/8 by more than 5 standard errors and must agree with
  // the exact Σ 4^E f(1 − f) within 5 standard errors.
  const int S = 1000;
  for (int which = 0; which < 2; ++which) {
    at::Tensor x = which == 0 ? at::full({1000}, 4.0f / 3).mul_(at::exp2(at::randint(-8, 8, {1000}).to(at::kFloat)))
                              : at::randn({1000}, at::make_generator<at::CPUGeneratorImpl>(12));
    const std::vector<float> v = floats_of(x);
    std::vector<double> sigma2, range;
    moments(v, sigma2, range);
    double bound = 0, expected = 0, sum = 0, sum_sq = 0;
    for (size_t i = 0; i < v.size(); ++i) bound += double(v[i]) * v[i] / 8, expected += sigma2[i];
    for (int seed = 0; seed < S; ++seed) {
      const std::vector<float> d = floats_of(decode(*c, encode(*c, x, payload_ctx(seed))));
      double err = 0;
      for (size_t i = 0; i < v.size(); ++i) err += (double(d[i]) - v[i]) * (double(d[i]) - v[i]);
      sum += err, sum_sq += err * err;
    }
    const double mean = sum / S, se = std::sqrt(std::max(0.0, sum_sq / S - mean * mean) / S);
    EXPECT_LE(mean, bound + 5 * se) << (which ? "gaussian" : "f = 1/3");
    EXPECT_LE(expected, bound * (1 + 1e-9)) << (which ? "gaussian" : "f = 1/3");
    EXPECT_NEAR(mean, expected, 5 * se) << (which ? "gaussian" : "f = 1/3");
    if (which == 0) EXPECT_NEAR(expected / bound, 1.0, 1e-6) << "f = 1/3 attains the bound";
  }
}

TEST_F(Natural, SeedsStepsAndParametersDrawDifferentlyTheSameSeedGivesTheSameBits) {
  at::Tensor x = at::randn({1000}, at::make_generator<at::CPUGeneratorImpl>(3));
  expect_draws_keyed_by_seed_step_parameter(*c, *loader.create("natural"), x);
}

TEST_F(Natural, CombineIsTheMeanOfDecodesInRankOrderBitwise) {
  expect_combine_is_rank_order_mean(*c, [](int W, int r) { return spread_values(1001, 40 + W * 4 + r); });
  std::vector<cddp::Payload> mixed{encode(*c, at::randn({16}), payload_ctx()), encode(*c, at::randn({8}), payload_ctx())};
  at::Tensor avg = at::empty({16});
  EXPECT_NE(error_of([&] { c->combine(mixed, avg); }).find("natural: "), std::string::npos);
}

TEST_F(Natural, Float64NonContiguousAndEmptyInputs) {
  at::Tensor x = at::randn({9, 11}, at::make_generator<at::CPUGeneratorImpl>(4));
  const cddp::Payload d = expect_float64_noncontiguous_and_empty(*c, x, 0);
  EXPECT_TRUE(at::equal(decode(*c, d, at::kDouble), decode(*c, d).to(at::kDouble)));
}

TEST_F(Natural, NonFiniteValuesNameTheParameter) {
  expect_nonfinite_names_parameter(*c, "natural", "emb.weight", 6);
  const std::string ints = error_of([&] { encode(*c, at::ones({3}, at::kShort), payload_ctx(0, 1, 0, 1, "b")); });
  EXPECT_NE(ints.find("natural: parameter 'b' is Short; expected float32 or float64"), std::string::npos) << ints;
}

TEST_F(Natural, TakesNoParameters) {
  const std::string msg = error_of([&] { loader.create("natural", {{"bits", int64_t{9}}}); });
  EXPECT_NE(msg.find("plugin 'natural': unknown parameter 'bits'; expected one of: (none)"), std::string::npos) << msg;
}

}  // namespace

TEST_F(Natural, EncodeIntoWritesLastStepsBuffersWithTheSameBits) {
  cddp::testing::expect_encode_into_reuses_buffers(*c, at::randn({4099}), at::randn({17}));
}
