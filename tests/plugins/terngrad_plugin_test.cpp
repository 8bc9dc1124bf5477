// terngrad_plugin_test.cpp — the terngrad plugin, loaded from cddp_terngrad.so: byte counts
// against ceil(n/4) + 4, the 2-bit codes against a reference built here from the header's
// definition (s = ‖x‖_∞, b_i = [u_i < |x_i|/s] with Philox draws keyed by seed, step and
// parameter), unbiasedness over 1,000 seeds with Var = |x|(s − |x|), determinism without the
// global generator, the rank-order mean, dtypes, layouts and its error messages.
#include <cddp/plugin_loader.h>

#include "payload_test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

using namespace cddp::testing;

namespace {

constexpr uint32_t kTagTernGrad = 0x5445524Eu;  // "TERN"

class TernGrad : public ::testing::Test {
 protected:
  cddp::PluginLoader loader = build_tree_loader();
  std::shared_ptr<cddp::PluginCompressor> c = loader.create("terngrad");
};

std::vector<uint32_t> read_codes(const cddp::Payload& p) {
  const at::Tensor bytes = p.parts.at(0).contiguous();
  const uint8_t* b = bytes.data_ptr<uint8_t>();
  std::vector<uint32_t> out(p.numel);
  for (int64_t i = 0; i < p.numel; ++i) out[i] = (b[i / 4] >> (2 * (i % 4))) & 3u;
  return out;
}

float max_abs(const std::vector<float>& v) {
  float s = 0;
  for (float x : v) s = std::max(s, std::fabs(x));
  return s;
}

TEST_F(TernGrad, IsAGatherPayloadWithoutSelection) {
  EXPECT_EQ(c->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_FALSE(c->caps().selection);
}

TEST_F(TernGrad, WireBytesAreCeilNOver4PlusTheScaler) {
  for (int64_t n : {0, 1, 3, 4, 5, 7, 8, 9, 1001, 4098}) {
    const int64_t f = (n + 3) / 4 + 4;
    cddp::Payload p = encode(*c, at::randn({n}), payload_ctx());
    EXPECT_EQ(p.wire_bytes(), f) << "n=" << n;
    EXPECT_EQ(c->wire_bytes({n}, at::kFloat, -1), f) << "n=" << n;
  }
  EXPECT_EQ(c->wire_bytes({3, 3}, at::kDouble, -1), 3 + 4);
}

TEST_F(TernGrad, CodesMatchTheReferenceAndDecodeToPlusMinusTheScaler) {
  const int64_t n = 1003;
  at::Tensor x = at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(21));
  x[1] = 0.0f;
  x[2] = -0.0f;
  const std::vector<float> v = floats_of(x);
  const float s = max_abs(v);
  const uint64_t seed = 0xfeedbeef12ull;
  cddp::Payload p = encode(*c, x, payload_ctx(seed, 9, 4));
  ASSERT_EQ(p.parts.size(), 2u);
  EXPECT_EQ(p.parts[1].item<float>(), s);
  const std::vector<uint32_t> codes = read_codes(p);
  const std::vector<float> dec = floats_of(decode(*c, p));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double u = philox_uniform(seed, kTagTernGrad, 9, 4, i);
    const bool keep = u < double(std::fabs(v[i])) / double(s);
    const uint32_t expect = keep ? (std::signbit(v[i]) ? 2u : 1u) : 0u;
    ASSERT_EQ(codes[i], expect) << i;
    ASSERT_EQ(dec[i], keep ? (std::signbit(v[i]) ? -s : s) : 0.f) << i;
    kept += keep;
    if (std::fabs(v[i]) == s) ASSERT_TRUE(keep) << "the largest entry is always sent";
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, n);
  // Bits past the last code are zero.
  EXPECT_EQ(bytes_of(p)[(n - 1) / 4] >> (2 * (n % 4)), 0);
}

TEST_F(TernGrad, UnbiasedOverAThousandSeeds) {
  // One draw of entry i is ±s with probability |x_i|/s, else 0: Var = |x_i|(s − |x_i|), and it is
  // never further than s from x_i.
  const int S = 1000;
  at::Tensor x = at::randn({600}, at::make_generator<at::CPUGeneratorImpl>(5));
  x[0] = 0.0f;
  x[1] = x.abs().max().item<float>();
  const std::vector<float> v = floats_of(x);
  const double s = max_abs(v);
  std::vector<double> sigma2, range(v.size(), s);
  for (float xi : v) sigma2.push_back(std::fabs(double(xi)) * (s - std::fabs(double(xi))));
  const BiasReport r =
      measure_bias([&](uint64_t seed) { return decode(*c, encode(*c, x, payload_ctx(seed, 3, 1))); }, x, sigma2, range, S);
  EXPECT_EQ(r.violations, 0) << r.first << " (worst " << r.worst_ratio << ")";
  EXPECT_LE(std::fabs(r.total_bias), 5 * r.total_sigma) << "Σ sign(x)(mean − x) = " << r.total_bias;
}

TEST_F(TernGrad, SeedsStepsAndParametersDrawDifferentlyTheSameSeedGivesTheSameBits) {
  at::Tensor x = at::randn({1000}, at::make_generator<at::CPUGeneratorImpl>(3));
  expect_draws_keyed_by_seed_step_parameter(*c, *loader.create("terngrad"), x);
}

TEST_F(TernGrad, CombineIsTheMeanOfDecodesInRankOrderBitwise) {
  expect_combine_is_rank_order_mean(*c, [](int W, int r) {
    return at::randn({1001}, at::make_generator<at::CPUGeneratorImpl>(W * 10 + r)).mul_(r + 1);
  });
  std::vector<cddp::Payload> mixed{encode(*c, at::randn({16}), payload_ctx()), encode(*c, at::randn({8}), payload_ctx())};
  at::Tensor avg = at::empty({16});
  EXPECT_NE(error_of([&] { c->combine(mixed, avg); }).find("terngrad: "), std::string::npos);
}

TEST_F(TernGrad, AllZeroFloat64NonContiguousAndEmptyInputs) {
  cddp::Payload z = encode(*c, at::zeros({9}), payload_ctx(1));
  EXPECT_EQ(z.parts[1].item<float>(), 0.f);
  EXPECT_TRUE(at::equal(decode(*c, z), at::zeros({9})));

  at::Tensor x = at::randn({12, 7}, at::make_generator<at::CPUGeneratorImpl>(4));
  expect_float64_noncontiguous_and_empty(*c, x, 4);
}

TEST_F(TernGrad, NonFiniteValuesNameTheParameter) {
  expect_nonfinite_names_parameter(*c, "terngrad", "fc2.bias", 8);
  const std::string ints = error_of([&] { encode(*c, at::ones({3}, at::kInt), payload_ctx(0, 1, 0, 1, "b")); });
  EXPECT_NE(ints.find("terngrad: parameter 'b' is Int; expected float32 or float64"), std::string::npos) << ints;
}

TEST_F(TernGrad, TakesNoParameters) {
  for (const cddp::ParamMap& params : {cddp::ParamMap{{"ratio", 0.01}}, cddp::ParamMap{{"levels", int64_t{3}}}}) {
    const std::string msg = error_of([&] { loader.create("terngrad", params); });
    EXPECT_NE(msg.find("plugin 'terngrad': unknown parameter '"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected one of: (none)"), std::string::npos) << msg;
  }
}

}  // namespace

TEST_F(TernGrad, EncodeIntoWritesLastStepsBuffersWithTheSameBits) {
  cddp::testing::expect_encode_into_reuses_buffers(*c, at::randn({4099}), at::randn({17}));
}
