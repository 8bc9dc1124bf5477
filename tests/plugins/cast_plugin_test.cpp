// cast_plugin_test.cpp — the cast plugin, loaded from cddp_cast.so: 2n bytes on the wire, the
// payload is half(x/W) (fp16 or bf16, round to nearest even) and its own decode W·half(x/W),
// both exactly; decode_sum of the 16-bit sum (rank order) is that sum; dtypes, layouts,
// overflow and NaN/Inf errors naming the parameter, and bad parameters.
#include <cddp/plugin_loader.h>

#include "payload_test_util.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

using namespace cddp::testing;

namespace {

class Cast : public ::testing::Test {
 protected:
  cddp::PluginLoader loader = build_tree_loader();
  std::shared_ptr<cddp::PluginCompressor> make(const std::string& dtype) {
    return loader.create("cast", {{"dtype", dtype}});
  }
};

// float → 16 bits → float, as c10's scalar types round (to nearest, ties to even).
float round16(const std::string& dtype, float v) {
  return dtype == "fp16" ? static_cast<float>(c10::Half(v)) : static_cast<float>(c10::BFloat16(v));
}

// Values that exercise rounding: ordinary, tiny (fp16 subnormals), exact halves of an ulp, signed zeros.
at::Tensor awkward_values(int64_t n) {
  at::Tensor x = at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(n)).mul_(3);
  const float special[] = {0.f, -0.f, 1e-7f, -3e-6f, 6.1e-5f, 1.f + 1.f / 2048, 1.f + 3.f / 2048, 1000.5f,
                           -65504.f, 1.f / 3, 2.0009765625f};
  for (int64_t i = 0; i < n && i < int64_t(sizeof special / sizeof special[0]); ++i) x[i] = special[i];
  return x;
}

TEST_F(Cast, IsASumPayloadWithoutSelection) {
  auto c = make("fp16");
  EXPECT_EQ(c->caps().kind, cddp::PayloadKind::Sum);
  EXPECT_FALSE(c->caps().selection);
}

TEST_F(Cast, WireBytesAreTwoPerEntry) {
  for (const char* d : {"fp16", "bf16"}) {
    auto c = make(d);
    for (int64_t n : {0, 1, 7, 8, 9, 1001}) {
      cddp::Payload p = encode(*c, at::randn({n}), payload_ctx());
      EXPECT_EQ(p.wire_bytes(), 2 * n) << d << " n=" << n;
      EXPECT_EQ(c->wire_bytes({n}, at::kFloat, -1), 2 * n) << d << " n=" << n;
      ASSERT_EQ(p.parts.size(), 1u);
      EXPECT_EQ(p.parts[0].scalar_type(), std::string(d) == "fp16" ? at::kHalf : at::kBFloat16);
    }
    EXPECT_EQ(c->wire_bytes({3, 5}, at::kDouble, -1), 30) << d;
  }
}

TEST_F(Cast, PayloadIsHalfOfXOverWAndOwnDecodeIsWTimesThatExactly) {
  for (const std::string d : {"fp16", "bf16"}) {
    auto c = make(d);
    const int64_t n = 1001;
    for (int W = 1; W <= 4; ++W) {
      // W times the midpoint m of two neighbouring 16-bit values, and the floats just below and
      // above it: x/W is a tie (to the even neighbour) or just off one, so a route to x/W that is
      // not the correctly rounded float division (x·(1/W), say) lands on the other side for some.
      at::Tensor x = awkward_values(n);
      const float ulp = d == "fp16" ? 1.f / 1024 : 1.f / 128;
      for (int k = 0; k < 64; ++k) {
        const float wm = float(W) * (1.f + (float(k) + 0.5f) * ulp);
        x[n - 1 - 3 * k] = wm;
        x[n - 2 - 3 * k] = -std::nextafter(wm, 0.f);
        x[n - 3 - 3 * k] = std::nextafter(wm, 1e9f);
      }
      const std::vector<float> xs = floats_of(x);
      cddp::Payload p = encode(*c, x, payload_ctx(0, 1, 0, W));
      EXPECT_EQ(p.world_size, W);
      const std::vector<float> wire = floats_of(p.parts[0]);
      const std::vector<float> dec = floats_of(decode(*c, p));
      for (int64_t i = 0; i < n; ++i) {
        const float h = round16(d, xs[i] / float(W));
        ASSERT_EQ(std::memcmp(&wire[i], &h, 4), 0) << d << " W=" << W << " i=" << i << " x=" << xs[i];
        // Exact: a 16-bit mantissa times W ≤ 4 fits float32. (Compared as values: decode_add_
        // into zeros gives 0 + −0 = +0.)
        const float own = float(W) * h;
        ASSERT_EQ(dec[i], own) << d << " W=" << W << " i=" << i;
      }
    }
  }
}

TEST_F(Cast, DecodeSumIsTheSixteenBitSumInRankOrder) {
  for (const std::string d : {"fp16", "bf16"}) {
    auto c = make(d);
    const int64_t n = 777;
    for (int W = 1; W <= 4; ++W) {
      std::vector<at::Tensor> xs;
      std::vector<cddp::Payload> ps;
      for (int r = 0; r < W; ++r) {
        xs.push_back(at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(10 * W + r)).add_(0.25 * r));
        ps.push_back(encode(*c, xs[r], payload_ctx(0, 1, 0, W)));
      }
      // What the allreduce hands back: the parts summed in their own 16-bit type, rank order.
      std::vector<std::vector<float>> wire;
      for (const auto& p : ps) wire.push_back(floats_of(p.parts[0]));
      std::vector<float> sum(n, 0.f);
      for (int64_t i = 0; i < n; ++i) {
        float s = wire[0][i];
        for (int r = 1; r < W; ++r) s = round16(d, s + wire[r][i]);
        sum[i] = s;
      }
      cddp::Payload summed = ps[0];
      summed.parts[0] = at::tensor(sum).to(ps[0].parts[0].scalar_type());
      at::Tensor avg = at::full({n}, 99.f);
      c->decode_sum(summed, W, avg);
      EXPECT_EQ(floats_of(avg), sum) << d << " W=" << W;
      at::Tensor mean = xs[0].clone();
      for (int r = 1; r < W; ++r) mean.add_(xs[r]);
      mean.div_(W);
      const double tol = d == "fp16" ? 4e-3 : 3e-2;  // a few ulps of the 16-bit type at |x| ~ 4
      EXPECT_TRUE(at::allclose(avg, mean, tol, tol)) << d << " W=" << W;
    }
  }
}

TEST_F(Cast, Float64InputDecodesToFloat64) {
  for (const std::string d : {"fp16", "bf16"}) {
    auto c = make(d);
    at::Tensor x = at::randn({65}, at::make_generator<at::CPUGeneratorImpl>(4)).to(at::kDouble);
    cddp::Payload p = encode(*c, x, payload_ctx(0, 1, 0, 2));
    EXPECT_EQ(p.dtype, at::kDouble);
    EXPECT_EQ(p.wire_bytes(), 130);
    at::Tensor dec = decode(*c, p, at::kDouble);
    EXPECT_EQ(dec.scalar_type(), at::kDouble);
    const double rel = d == "fp16" ? 1.0 / 2048 : 1.0 / 256;  // half an ulp of the 16-bit mantissa
    EXPECT_TRUE(at::le((dec - x).abs(), x.abs() * rel + 1e-7).all().item<bool>()) << d;
  }
}

TEST_F(Cast, NonContiguousInputUsesLogicalOrder) {
  auto c = make("fp16");
  at::Tensor t = at::randn({6, 5}).t();
  ASSERT_FALSE(t.is_contiguous());
  for (int W : {1, 3}) {
    cddp::Payload a = encode(*c, t, payload_ctx(0, 1, 0, W)), b = encode(*c, t.contiguous(), payload_ctx(0, 1, 0, W));
    EXPECT_EQ(bytes_of(a), bytes_of(b)) << "W=" << W;
    EXPECT_EQ(a.shape, (std::vector<int64_t>{5, 6}));
  }
}

TEST_F(Cast, EmptyTensor) {
  auto c = make("bf16");
  cddp::Payload p = encode(*c, at::empty({0}), payload_ctx(0, 1, 0, 2));
  EXPECT_EQ(p.wire_bytes(), 0);
  at::Tensor d = at::empty({0});
  c->decode_add_(p, d);
  c->decode_sum(p, 2, d);
}

TEST_F(Cast, DeterministicAndBlindToTheGlobalGenerator) {
  auto c = make("fp16");
  at::Tensor x = at::randn({300}, at::make_generator<at::CPUGeneratorImpl>(9));
  at::manual_seed(1);
  const auto a = bytes_of(encode(*c, x, payload_ctx(1, 1, 0, 2)));
  at::manual_seed(2);
  EXPECT_EQ(a, bytes_of(encode(*c, x, payload_ctx(7, 9, 4, 2))));
}

TEST_F(Cast, AValueThatOverflowsTheSixteenBitTypeNamesTheParameter) {
  auto fp16 = make("fp16");
  EXPECT_NO_THROW(encode(*fp16, at::tensor({65504.f, -65504.f}), payload_ctx()));
  EXPECT_NO_THROW(encode(*fp16, at::tensor({70000.f}), payload_ctx(0, 1, 0, 2))) << "70000/2 fits";
  std::string msg = error_of([&] { encode(*fp16, at::tensor({1.f, 70000.f}), payload_ctx(0, 5, 0, 1, "fc.weight")); });
  EXPECT_NE(msg.find("cast: a value overflows fp16 (|x|/W > 65504) in parameter 'fc.weight' at step 5"),
            std::string::npos)
      << msg;
  auto bf16 = make("bf16");
  EXPECT_NO_THROW(encode(*bf16, at::tensor({1e38f}), payload_ctx()));
  msg = error_of([&] { encode(*bf16, at::tensor({std::numeric_limits<float>::max()}), payload_ctx(0, 1, 0, 1, "b")); });
  EXPECT_NE(msg.find("cast: a value overflows bf16 in parameter 'b' at step 1"), std::string::npos) << msg;
}

TEST_F(Cast, NonFiniteValuesNameTheParameter) {
  for (const char* d : {"fp16", "bf16"}) {
    auto c = make(d);
    for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()})
      for (int64_t at : {3, 12, 19})  // in a whole vector of 8 and in the tail
        for (int W : {1, 2}) {
          at::Tensor x = at::randn({21});
          x[at] = bad;
          const std::string msg = error_of([&] { encode(*c, x, payload_ctx(0, 2, 0, W, "conv1.weight")); });
          EXPECT_NE(msg.find("cast: non-finite value (NaN or Inf) in parameter 'conv1.weight' at step 2"),
                    std::string::npos)
              << d << " at " << at << " W=" << W << ": " << msg;
        }
  }
}

TEST_F(Cast, RefusesIntegerTensorsAndAZeroWorld) {
  auto c = make("fp16");
  std::string msg = error_of([&] { encode(*c, at::ones({3}, at::kLong), payload_ctx(0, 1, 0, 1, "b")); });
  EXPECT_NE(msg.find("cast: parameter 'b' is Long; expected float32 or float64"), std::string::npos) << msg;
  msg = error_of([&] { encode(*c, at::ones({3}), payload_ctx(0, 1, 0, 0)); });
  EXPECT_NE(msg.find("cast: world_size must be >= 1"), std::string::npos) << msg;
}

TEST_F(Cast, BadParametersNameThePluginAndTheParameter) {
  std::string msg = error_of([&] { make("fp8"); });
  EXPECT_NE(msg.find("plugin 'cast': parameter 'dtype' = \"fp8\" is not one of \"fp16\", \"bf16\""), std::string::npos)
      << msg;
  msg = error_of([&] { loader.create("cast", {{"dtype", true}}); });
  EXPECT_NE(msg.find("plugin 'cast': parameter 'dtype' must be a string"), std::string::npos) << msg;
  msg = error_of([&] { loader.create("cast", {{"bits", int64_t{16}}}); });
  EXPECT_NE(msg.find("plugin 'cast': unknown parameter 'bits'; expected one of: dtype"), std::string::npos) << msg;
  EXPECT_EQ(encode(*loader.create("cast"), at::ones({2}), payload_ctx()).parts[0].scalar_type(), at::kHalf)
      << "the default is fp16";
}

}  // namespace

TEST_F(Cast, EncodeIntoWritesLastStepsBufferWithTheSameBits) {
  for (const char* d : {"fp16", "bf16"}) {
    auto c = make(d);
    cddp::testing::expect_encode_into_reuses_buffers(*c, at::randn({4099}), at::randn({17}));
  }
}
