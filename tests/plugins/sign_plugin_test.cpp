// sign_plugin_test.cpp — the sign plugin, loaded from cddp_sign.so: byte counts against
// ceil(n/8) (+4 scaled, +8 onebit), the bit layout, each variant's decode against a reference
// computed here (±1; ±‖x‖₁/n; onebit's two means), the majority vote by hand (ties give 0),
// the rank-order mean of the other two variants, dtypes, layouts, and its error messages.
#include <cddp/plugin_loader.h>

#include "payload_test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

using namespace cddp::testing;

namespace {

const char* const kVariants[] = {"signsgd", "scaled", "onebit"};

class Sign : public ::testing::Test {
 protected:
  cddp::PluginLoader loader = build_tree_loader();
  std::shared_ptr<cddp::PluginCompressor> make(const std::string& variant) {
    return loader.create("sign", {{"variant", variant}});
  }
};

int64_t extra_bytes(const std::string& v) { return v == "signsgd" ? 0 : v == "scaled" ? 4 : 8; }

// Σ terms in the order plugins/common/sign_codes.h documents: term i into lane i mod 8 of
// block i / 1024; a block's lanes added ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) onto
// the total, blocks in index order.
double blocked_sum(const std::vector<double>& terms) {
  double total = 0;
  for (size_t lo = 0; lo < terms.size(); lo += 1024) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = lo; i < std::min(terms.size(), lo + 1024); ++i) lane[i % 8] += terms[i];
    total += ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
  return total;
}

// x ≥ 0, −0 included, is "up".
bool up(double v) { return !std::signbit(v) || v == 0; }

TEST_F(Sign, IsAGatherPayloadWithoutSelection) {
  auto c = make("scaled");
  EXPECT_EQ(c->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_FALSE(c->caps().selection);
  EXPECT_EQ(c->name(), "sign");
}

TEST_F(Sign, WireBytesAreCeilNOver8PlusTheScales) {
  for (const char* v : kVariants) {
    auto c = make(v);
    for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 1001, 4099}) {
      const int64_t formula = (n + 7) / 8 + extra_bytes(v);
      cddp::Payload p = encode(*c, at::randn({n}), payload_ctx());
      EXPECT_EQ(p.wire_bytes(), formula) << v << " n=" << n;
      EXPECT_EQ(c->wire_bytes({n}, at::kFloat, -1), formula) << v << " n=" << n;
      EXPECT_EQ(p.numel, n);
    }
    // The shape's product counts, not its first dimension; the dtype does not matter.
    EXPECT_EQ(c->wire_bytes({3, 3}, at::kDouble, -1), 2 + extra_bytes(v)) << v;
    EXPECT_EQ(encode(*c, at::randn({3, 3}), payload_ctx()).wire_bytes(), 2 + extra_bytes(v)) << v;
  }
}

TEST_F(Sign, BitIOfByteIOver8LsbFirstOneForNonNegative) {
  auto c = make("signsgd");
  //                    bit: 0    1    2    3     4    5    6    7  | 8    9
  at::Tensor x = at::tensor({1.f, -2.f, 0.f, -0.f, 3.f, -4.f, 5.f, -6.f, -7.f, 1e-30f});
  cddp::Payload p = encode(*c, x, payload_ctx());
  ASSERT_EQ(p.parts.size(), 1u);
  ASSERT_EQ(p.parts[0].scalar_type(), at::kByte);
  const std::vector<uint8_t> b = bytes_of(p);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0], 0b01011101) << "1, 0 and -0 and 3 and 5 are up";
  EXPECT_EQ(b[1], 0b10) << "-7 down, 1e-30 up, unused bits zero";
  EXPECT_TRUE(at::equal(decode(*c, p), at::tensor({1.f, -1.f, 1.f, 1.f, 1.f, -1.f, 1.f, -1.f, -1.f, 1.f})));
}

TEST_F(Sign, ScaledDecodesToPlusMinusTheMeanAbsoluteValue) {
  auto c = make("scaled");
  for (int64_t n : {1, 9, 1001, 1024, 2053, 5003}) {
    // Magnitudes over 2^±20, so that the order of the sum shows in the float32 scale.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(n);
    at::Tensor x = at::randn({n}, gen).mul_(at::exp2(at::randint(-20, 20, {n}, gen).to(at::kFloat)));
    x[0] = -0.0f;
    const std::vector<float> xs = floats_of(x);
    std::vector<double> terms;
    for (float v : xs) terms.push_back(std::fabs(double(v)));
    const float s = float(blocked_sum(terms) / double(n));  // ‖x‖₁/n, as float32 on the wire
    cddp::Payload p = encode(*c, x, payload_ctx());
    ASSERT_EQ(p.parts.size(), 2u);
    EXPECT_EQ(p.parts[1].item<float>(), s) << "n=" << n;
    const std::vector<float> d = floats_of(decode(*c, p));
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(d[i], up(xs[i]) ? s : -s) << "n=" << n << " i=" << i;
    // float64 (the scalar pass) sums in the same order.
    EXPECT_EQ(encode(*c, x.to(at::kDouble), payload_ctx()).parts[1].item<float>(), s) << "n=" << n;
  }
}

TEST_F(Sign, OneBitDecodesToTheMeanOfEachSide) {
  auto c = make("onebit");
  // Whole blocks of 1024, a partial last group of 8, and a tail in a block of its own (2048 + 5).
  for (int64_t n : {1, 9, 1001, 1024, 2053, 3003}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5 + n);
    at::Tensor x = at::randn({n}, gen).mul_(at::exp2(at::randint(-20, 20, {n}, gen).to(at::kFloat)));
    if (n > 8) x[7] = 0.0f, x[8] = -0.0f;
    const std::vector<float> xs = floats_of(x);
    std::vector<double> pos, neg;  // each side's entries at their own index, 0 at the other side's
    int64_t np = 0, nn = 0;
    for (float v : xs) {
      pos.push_back(up(v) ? double(v) : 0.0), neg.push_back(up(v) ? 0.0 : double(v));
      (up(v) ? np : nn) += 1;
    }
    const float a_pos = np ? float(blocked_sum(pos) / double(np)) : 0.f;
    const float a_neg = nn ? float(blocked_sum(neg) / double(nn)) : 0.f;
    // float32 (the vectorised pass) and float64 (the scalar one) give the same scales.
    for (auto dtype : {at::kFloat, at::kDouble}) {
      cddp::Payload p = encode(*c, x.to(dtype), payload_ctx());
      ASSERT_EQ(p.parts.size(), 2u);
      EXPECT_EQ(floats_of(p.parts[1]), (std::vector<float>{a_pos, a_neg})) << "n=" << n << " " << dtype;
      EXPECT_EQ(bytes_of(p), bytes_of(encode(*c, x, payload_ctx()))) << "n=" << n;
      const std::vector<float> d = floats_of(decode(*c, p));
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(d[i], up(xs[i]) ? a_pos : a_neg) << "n=" << n << " i=" << i;
    }
  }

  // One side empty: its mean is 0 and no entry decodes to it.
  cddp::Payload all_up = encode(*c, at::tensor({1.f, 2.f, 0.f}), payload_ctx());
  EXPECT_EQ(floats_of(all_up.parts[1]), (std::vector<float>{1.f, 0.f}));
  EXPECT_TRUE(at::equal(decode(*c, all_up), at::tensor({1.f, 1.f, 1.f})));
  cddp::Payload all_down = encode(*c, at::tensor({-1.f, -3.f}), payload_ctx());
  EXPECT_EQ(floats_of(all_down.parts[1]), (std::vector<float>{0.f, -2.f}));
}

TEST_F(Sign, DecodeAddsToWhatIsThere) {
  auto c = make("signsgd");
  cddp::Payload p = encode(*c, at::tensor({2.f, -2.f}), payload_ctx());
  at::Tensor d = at::full({2}, 10.f);
  c->decode_add_(p, d);
  EXPECT_TRUE(at::equal(d, at::tensor({11.f, 9.f})));
}

TEST_F(Sign, MajorityVoteByHandWithTiesGivingZero) {
  auto c = make("signsgd");
  const int64_t n = 517;
  for (int W = 1; W <= 4; ++W) {
    std::vector<at::Tensor> xs;
    std::vector<cddp::Payload> ps;
    for (int r = 0; r < W; ++r) {
      xs.push_back(at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(100 * W + r)));
      if (r == 1) xs[r][3] = -0.0f;  // −0 votes up
      ps.push_back(encode(*c, xs[r], payload_ctx(0, 1, 0, W)));
    }
    at::Tensor avg = at::full({n}, 99.f);
    c->combine(ps, avg);
    const std::vector<float> a = floats_of(avg);
    int64_t ties = 0;
    for (int64_t i = 0; i < n; ++i) {
      int votes = 0;
      for (int r = 0; r < W; ++r) votes += up(xs[r][i].item<float>()) ? 1 : -1;
      const float expect = votes > 0 ? 1.f : votes < 0 ? -1.f : 0.f;
      ties += votes == 0;
      ASSERT_EQ(a[i], expect) << "W=" << W << " i=" << i;
    }
    if (W % 2 == 0) EXPECT_GT(ties, 0) << "W=" << W << ": the data should contain ties";
  }
  // Crafted: two ranks that disagree everywhere tie everywhere; four ranks 2-2 and 3-1.
  std::vector<cddp::Payload> two{encode(*c, at::tensor({1.f, -1.f}), payload_ctx()),
                                 encode(*c, at::tensor({-1.f, 1.f}), payload_ctx())};
  at::Tensor avg2 = at::empty({2});
  c->combine(two, avg2);
  EXPECT_TRUE(at::equal(avg2, at::zeros({2})));
  std::vector<cddp::Payload> four;
  for (auto v : {at::tensor({1.f, 1.f, -1.f}), at::tensor({1.f, -1.f, -1.f}), at::tensor({-1.f, -1.f, -1.f}),
                 at::tensor({-1.f, 1.f, 1.f})})
    four.push_back(encode(*c, v, payload_ctx()));
  at::Tensor avg4 = at::empty({3});
  c->combine(four, avg4);
  EXPECT_TRUE(at::equal(avg4, at::tensor({0.f, 0.f, -1.f})));
}

TEST_F(Sign, ScaledAndOneBitCombineIsTheMeanOfDecodesInRankOrderBitwise) {
  for (const char* v : {"scaled", "onebit"}) {
    auto c = make(v);
    const int64_t n = 1001;
    for (int W = 1; W <= 4; ++W) {
      std::vector<cddp::Payload> ps;
      for (int r = 0; r < W; ++r)
        ps.push_back(encode(*c, at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(7 * W + r)).mul_(r + 1),
                            payload_ctx(0, 1, 0, W)));
      at::Tensor avg = at::full({n}, 99.f);
      c->combine(ps, avg);
      EXPECT_TRUE(bitwise_equal(avg, mean_in_rank_order(*c, ps))) << v << " W=" << W;
      if (W == 1) EXPECT_TRUE(bitwise_equal(avg, decode(*c, ps[0]))) << v;
    }
  }
}

TEST_F(Sign, Float64InputAndOutput) {
  auto c = make("scaled");
  at::Tensor x = at::randn({33}, at::make_generator<at::CPUGeneratorImpl>(3)).to(at::kDouble);
  cddp::Payload p = encode(*c, x, payload_ctx());
  EXPECT_EQ(p.dtype, at::kDouble);
  EXPECT_EQ(p.wire_bytes(), 5 + 4);
  const double s = double(float(x.abs().sum().item<double>() / 33));
  at::Tensor d = decode(*c, p, at::kDouble);
  EXPECT_TRUE(at::equal(d, at::where(x.ge(0), at::full({33}, s, at::kDouble), at::full({33}, -s, at::kDouble))));
  // The same signs as the float32 encoding of the same values.
  EXPECT_EQ(bytes_of(p)[0], bytes_of(encode(*c, x.to(at::kFloat), payload_ctx()))[0]);
}

TEST_F(Sign, NonContiguousInputUsesLogicalOrder) {
  for (const char* v : kVariants) {
    auto c = make(v);
    at::Tensor base = at::randn({5, 7}, at::make_generator<at::CPUGeneratorImpl>(1));
    at::Tensor t = base.t();
    ASSERT_FALSE(t.is_contiguous());
    cddp::Payload a = encode(*c, t, payload_ctx()), b = encode(*c, t.contiguous(), payload_ctx());
    EXPECT_EQ(bytes_of(a), bytes_of(b)) << v;
    EXPECT_EQ(a.shape, (std::vector<int64_t>{7, 5})) << v;
    EXPECT_EQ(a.numel, 35) << v;
  }
}

TEST_F(Sign, EmptyTensor) {
  for (const char* v : kVariants) {
    auto c = make(v);
    cddp::Payload p = encode(*c, at::empty({0, 4}), payload_ctx());
    EXPECT_EQ(p.numel, 0) << v;
    EXPECT_EQ(p.wire_bytes(), extra_bytes(v)) << v;
    at::Tensor d = at::empty({0});
    c->decode_add_(p, d);
    std::vector<cddp::Payload> two{p, p};
    c->combine(two, d);
  }
}

TEST_F(Sign, DeterministicAndBlindToTheGlobalGenerator) {
  for (const char* v : kVariants) {
    auto c = make(v);
    at::Tensor x = at::randn({100}, at::make_generator<at::CPUGeneratorImpl>(2));
    at::manual_seed(1);
    const auto a = bytes_of(encode(*c, x, payload_ctx(1, 1, 0)));
    at::manual_seed(2);
    const auto b = bytes_of(encode(*c, x, payload_ctx(2, 5, 3)));  // seed, step, parameter: no RNG at all
    EXPECT_EQ(a, b) << v;
  }
}

TEST_F(Sign, NonFiniteValuesNameTheParameter) {
  for (const char* v : kVariants) {
    auto c = make(v);
    for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()})
      for (int64_t at : {3, 12, 19, 1030, 2050}) {  // whole bytes, the last partial one, later blocks
        at::Tensor x = at::randn({at < 21 ? 21 : 2053});
        x[at] = bad;
        for (auto dtype : {at::kFloat, at::kDouble}) {
          const std::string msg = error_of([&] { encode(*c, x.to(dtype), payload_ctx(0, 3, 0, 1, "fc1.weight")); });
          EXPECT_NE(msg.find("sign: non-finite value (NaN or Inf) in parameter 'fc1.weight' at step 3"),
                    std::string::npos)
              << v << " at " << at << ": " << msg;
        }
      }
  }
}

TEST_F(Sign, RefusesIntegerTensors) {
  auto c = make("signsgd");
  const std::string msg = error_of([&] { encode(*c, at::ones({4}, at::kInt), payload_ctx(0, 1, 0, 1, "b")); });
  EXPECT_NE(msg.find("sign: parameter 'b' is Int; expected float32 or float64"), std::string::npos) << msg;
}

TEST_F(Sign, BadParametersNameThePluginAndTheParameter) {
  std::string msg = error_of([&] { make("twobit"); });
  EXPECT_NE(msg.find("plugin 'sign': parameter 'variant' = \"twobit\" is not one of \"signsgd\", \"scaled\", "
                     "\"onebit\""),
            std::string::npos)
      << msg;
  msg = error_of([&] { loader.create("sign", {{"variant", int64_t{1}}}); });
  EXPECT_NE(msg.find("plugin 'sign': parameter 'variant' must be a string"), std::string::npos) << msg;
  msg = error_of([&] { loader.create("sign", {{"ratio", 0.5}}); });
  EXPECT_NE(msg.find("plugin 'sign': unknown parameter 'ratio'; expected one of: variant"), std::string::npos) << msg;
  EXPECT_NO_THROW(loader.create("sign"));  // default: scaled
  EXPECT_EQ(loader.create("sign")->wire_bytes({8}, at::kFloat, -1), 1 + 4);
}

TEST_F(Sign, APayloadOfAnotherVariantIsRefused) {
  auto scaled = make("scaled"), signsgd = make("signsgd");
  cddp::Payload p = encode(*signsgd, at::randn({16}), payload_ctx());
  at::Tensor d = at::zeros({16});
  const std::string msg = error_of([&] { scaled->decode_add_(p, d); });
  EXPECT_NE(msg.find("sign: decode_add_: payload does not have this variant's layout"), std::string::npos) << msg;
}

TEST_F(Sign, CombineRefusesRanksOfDifferentSizes) {
  for (const char* v : kVariants) {
    auto c = make(v);
    std::vector<cddp::Payload> ps{encode(*c, at::randn({16}), payload_ctx()), encode(*c, at::randn({8}), payload_ctx())};
    at::Tensor avg = at::empty({16});
    const std::string msg = error_of([&] { c->combine(ps, avg); });
    EXPECT_NE(msg.find("sign: combine: rank 1's payload has 8 entries, rank 0's 16"), std::string::npos)
        << v << ": " << msg;
  }
}

}  // namespace

TEST_F(Sign, EncodeIntoWritesLastStepsBuffersWithTheSameBits) {
  for (const char* v : kVariants) {
    auto c = make(v);
    cddp::testing::expect_encode_into_reuses_buffers(*c, at::randn({4099}), at::randn({17}));
  }
}
