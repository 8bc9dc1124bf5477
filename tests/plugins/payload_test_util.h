// payload_test_util.h — helpers shared by the tests of the payload plugins (sign, cast, qsgd,
// terngrad, natural): contexts, encode/decode through the loaded plugin, raw bytes of a
// payload, the rank-order mean of decodes computed by hand, Philox uniforms as the plugins'
// documented stream layout gives them, and a statistical check of unbiasedness.
//
// It will not load plugins itself (test_plugins.h does) or know any plugin's wire format.
#pragma once

#include <cddp/compressor.h>
#include <cddp/payload.h>

#include "philox.h"
#include "bitwise_equal.h"
#include "test_plugins.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace cddp::testing {

inline CompressContext payload_ctx(uint64_t seed = 0, int64_t step = 1, int64_t param = 0, int world = 1,
                                   const std::string& name = "w") {
  CompressContext c;
  c.seed = seed;
  c.step = step;
  c.param_index = param;
  c.world_size = world;
  c.param_name = name;
  return c;
}

inline Payload encode(Compressor& c, const at::Tensor& x, const CompressContext& ctx) {
  PluginState none;
  return c.encode(x, none, ctx);
}

// D(p): decode_add_ into zeros of `dtype`.
inline at::Tensor decode(const Compressor& c, const Payload& p, at::ScalarType dtype = at::kFloat) {
  at::Tensor d = at::zeros({p.numel}, dtype);
  c.decode_add_(p, d);
  return d;
}

// Every part's bytes, back to back: what travels.
inline std::vector<uint8_t> bytes_of(const Payload& p) {
  std::vector<uint8_t> out;
  for (const auto& t : p.parts) {
    at::Tensor c = t.contiguous();
    const auto* b = static_cast<const uint8_t*>(c.data_ptr());
    out.insert(out.end(), b, b + c.numel() * c.element_size());
  }
  return out;
}

inline std::vector<float> floats_of(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Compressor::encode_into as the optimizer's payload stage calls it, through the plugin's ABI:
//  - handed its previous payload, it writes into those very buffers (the same data pointers) and
//    produces the bits encode() produces, over several steps (different draws each step);
//  - a part someone else still holds (a view kept elsewhere) is left alone: a fresh buffer, and
//    the held tensor keeps its bytes;
//  - handed a payload of another size (another tensor), it allocates and is still right.
inline void expect_encode_into_reuses_buffers(Compressor& c, const at::Tensor& x, const at::Tensor& other) {
  PluginState none;
  Payload kept = c.encode(x, none, payload_ctx(7, 1, 2));
  std::vector<const void*> where;
  for (const auto& t : kept.parts) where.push_back(t.data_ptr());
  for (int64_t step = 2; step <= 4; ++step) {
    const Payload fresh = c.encode(x, none, payload_ctx(7, step, 2));
    c.encode_into(x, none, payload_ctx(7, step, 2), kept);
    ASSERT_EQ(kept.parts.size(), fresh.parts.size());
    for (size_t j = 0; j < kept.parts.size(); ++j) {
      EXPECT_EQ(kept.parts[j].data_ptr(), where[j]) << c.name() << ": part " << j << " was not reused, step " << step;
      EXPECT_TRUE(bitwise_equal(kept.parts[j], fresh.parts[j])) << c.name() << ": part " << j << ", step " << step;
    }
    EXPECT_EQ(kept.numel, fresh.numel);
    EXPECT_EQ(kept.shape, fresh.shape);
    EXPECT_EQ(kept.dtype, fresh.dtype);
  }
  const at::Tensor held = kept.parts[0];  // someone still reads it
  const at::Tensor held_bytes = held.clone();
  c.encode_into(x, none, payload_ctx(7, 9, 2), kept);
  EXPECT_NE(kept.parts[0].data_ptr(), held.data_ptr()) << c.name() << ": wrote into a buffer someone holds";
  EXPECT_TRUE(bitwise_equal(held, held_bytes));
  EXPECT_TRUE(bitwise_equal(kept.parts[0], c.encode(x, none, payload_ctx(7, 9, 2)).parts[0]));
  c.encode_into(other, none, payload_ctx(7, 10, 2), kept);  // another size: fresh buffers
  EXPECT_EQ(bytes_of(kept), bytes_of(c.encode(other, none, payload_ctx(7, 10, 2))));
  EXPECT_EQ(kept.numel, other.numel());
}

// A stochastic codec's draws are a function of (seed, step, parameter) alone: the same bits
// whatever the global generator holds and from another instance (another rank), other bits when
// any of the three changes; and encode() takes nothing from the global generator.
inline void expect_draws_keyed_by_seed_step_parameter(Compressor& c, Compressor& other, const at::Tensor& x) {
  at::manual_seed(1);
  const auto base = bytes_of(encode(c, x, payload_ctx(42, 5, 2)));
  at::manual_seed(31337);
  at::randn({77});
  EXPECT_EQ(bytes_of(encode(c, x, payload_ctx(42, 5, 2))), base) << "the global generator must not matter";
  EXPECT_EQ(bytes_of(encode(other, x, payload_ctx(42, 5, 2))), base) << "another instance";
  EXPECT_NE(bytes_of(encode(c, x, payload_ctx(43, 5, 2))), base) << "seed";
  EXPECT_NE(bytes_of(encode(c, x, payload_ctx(42, 6, 2))), base) << "step";
  EXPECT_NE(bytes_of(encode(c, x, payload_ctx(42, 5, 3))), base) << "parameter";
  at::manual_seed(7);
  encode(c, x, payload_ctx(1, 1, 0));
  const at::Tensor after = at::randn({4});
  at::manual_seed(7);
  EXPECT_TRUE(at::equal(at::randn({4}), after)) << "encode consumed the global generator";
}

// The Gather average as the contract states it, by hand: each rank's decode on its own, summed
// entry by entry in rank order in float, then divided by W (nothing divided when W = 1).
inline at::Tensor mean_in_rank_order(const Compressor& c, const std::vector<Payload>& ranks) {
  const int64_t n = ranks.at(0).numel;
  std::vector<std::vector<float>> d;
  for (const auto& p : ranks) d.push_back(floats_of(decode(c, p)));
  at::Tensor out = at::empty({n}, at::kFloat);
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    float sum = 0;
    for (const auto& r : d) sum += r[i];
    o[i] = ranks.size() > 1 ? sum / static_cast<float>(ranks.size()) : sum;
  }
  return out;
}

// combine() over W = 1..4 payloads equals the rank-order mean of their decodes, bitwise, and at
// W = 1 the payload's own decode. `input(W, r)` is rank r's tensor among W (all of one size).
inline void expect_combine_is_rank_order_mean(Compressor& c, const std::function<at::Tensor(int, int)>& input) {
  for (int W = 1; W <= 4; ++W) {
    std::vector<Payload> ps;
    for (int r = 0; r < W; ++r) ps.push_back(encode(c, input(W, r), payload_ctx(5, 1, 0, W)));
    at::Tensor avg = at::full({ps[0].numel}, 99.f);
    c.combine(ps, avg);
    EXPECT_TRUE(bitwise_equal(avg, mean_in_rank_order(c, ps))) << "W=" << W;
    if (W == 1) EXPECT_TRUE(bitwise_equal(avg, decode(c, ps[0])));
  }
}

// float64 input of float32 values codes the same bits and decodes to float64; a transposed
// (non-contiguous) 2-D input codes in logical order and keeps its shape; an empty tensor takes
// `empty_bytes` and decodes and combines without error. Returns the float64 payload.
inline Payload expect_float64_noncontiguous_and_empty(Compressor& c, const at::Tensor& x, int64_t empty_bytes) {
  const auto bits = bytes_of(encode(c, x, payload_ctx(3)));
  Payload d = encode(c, x.to(at::kDouble), payload_ctx(3));
  EXPECT_EQ(d.dtype, at::kDouble);
  EXPECT_EQ(bytes_of(d), bits) << "float64 of float32 values codes the same";
  EXPECT_EQ(decode(c, d, at::kDouble).scalar_type(), at::kDouble);

  at::Tensor t = x.t();
  EXPECT_FALSE(t.is_contiguous());
  Payload nc = encode(c, t, payload_ctx(3));
  EXPECT_EQ(bytes_of(nc), bytes_of(encode(c, t.contiguous(), payload_ctx(3))));
  EXPECT_EQ(nc.shape, (std::vector<int64_t>{x.size(1), x.size(0)}));

  Payload e = encode(c, at::empty({0}), payload_ctx());
  EXPECT_EQ(e.numel, 0);
  EXPECT_EQ(e.wire_bytes(), empty_bytes);
  at::Tensor none = at::empty({0});
  c.decode_add_(e, none);
  c.combine({e, e}, none);
  return d;
}

// NaN, +Inf and −Inf (at entry 257: past the first chunk of draws, not at a multiple of 8) are
// an error "<plugin>: non-finite value (NaN or Inf) in parameter '<param>' at step <step>".
inline void expect_nonfinite_names_parameter(Compressor& c, const std::string& plugin, const std::string& param,
                                             int64_t step) {
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    const std::string msg = error_of([&] {
      at::Tensor x = at::randn({300});
      x[257] = bad;
      encode(c, x, payload_ctx(0, step, 0, 1, param));
    });
    EXPECT_NE(msg.find(plugin + ": non-finite value (NaN or Inf) in parameter '" + param + "' at step " +
                       std::to_string(step)),
              std::string::npos)
        << msg;
  }
}

// The uniform in [0, 1) the quantizers document for element i (quantizer_support.h), written
// from that text with the scalar Philox of philox.h: key (lo32(seed) ^ tag, hi32(seed)); within
// i's chunk of 512 entries r = i mod 512, block 64·(i / 512) + r mod 64, counter (block, step,
// parameter), lane (r mod 256) / 64, of that word the low 16 bits for r < 256, else the high 16.
inline float philox_uniform(uint64_t seed, uint32_t tag, int64_t step, int64_t param, int64_t i) {
  const philox::Key key{static_cast<uint32_t>(seed) ^ tag, static_cast<uint32_t>(seed >> 32)};
  const int64_t r = i % 512;
  const uint64_t block = uint64_t(i / 512) * 64 + uint64_t(r % 64);
  const philox::Block b = philox::philox4x32_10(philox::randomk_counter(block, step, param), key);
  const uint32_t word = b.c[(r % 256) / 64];
  return static_cast<float>(r < 256 ? word & 0xFFFFu : word >> 16) * (1.0f / 65536.0f);
}

// Unbiasedness, measured: the mean over seeds 0..S-1 of D(C(x)) against x, entry by entry.
// `sigma2[i]` is the exact variance of one draw of entry i and `range[i]` a bound on |D(C(x))_i − x_i|
// for one draw. The allowance is Bernstein's inequality at δ = 1e-6 per entry:
//     |mean_i − x_i| ≤ √(2·σ_i²·L/S) + 2·range_i·L/(3S),   L = ln(2/δ) ≈ 14.5,
// i.e. about 5.4·σ_i/√S + 9.7·range_i/S (the second term is what a lattice of steps `range`
// needs where σ_i is tiny). Also returned: the signed total Σ sign(x_i)(mean_i − x_i), which a
// bias of one direction (towards or away from zero) piles up, against its own standard deviation.
struct BiasReport {
  int64_t violations = 0;
  double worst_ratio = 0;     // max |mean − x| / allowance
  double total_bias = 0;      // Σ sign(x_i)(mean_i − x_i)
  double total_sigma = 0;     // √(Σ σ_i² / S)
  std::string first;          // the first violation, described
};

inline BiasReport measure_bias(const std::function<at::Tensor(uint64_t seed)>& draw, const at::Tensor& x,
                               const std::vector<double>& sigma2, const std::vector<double>& range, int S) {
  const int64_t n = x.numel();
  std::vector<double> sum(n, 0.0);
  for (int s = 0; s < S; ++s) {
    at::Tensor d = draw(uint64_t(s)).to(at::kDouble).contiguous();
    const double* p = d.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) sum[i] += p[i];
  }
  const std::vector<float> xs = floats_of(x);
  const double L = std::log(2.0 / 1e-6);
  BiasReport r;
  double var_total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double mean = sum[i] / S, dev = mean - double(xs[i]);
    const double allow = std::sqrt(2 * sigma2[i] * L / S) + 2 * range[i] * L / (3.0 * S);
    const double ratio = allow > 0 ? std::fabs(dev) / allow : (dev == 0 ? 0 : INFINITY);
    r.worst_ratio = std::max(r.worst_ratio, ratio);
    if (ratio > 1) {
      if (r.violations++ == 0)
        r.first = "entry " + std::to_string(i) + ": x = " + std::to_string(xs[i]) + ", mean = " +
                  std::to_string(mean) + ", allowance " + std::to_string(allow);
    }
    r.total_bias += (xs[i] < 0 ? -dev : dev);
    var_total += sigma2[i];
  }
  r.total_sigma = std::sqrt(var_total / S);
  return r;
}

}  // namespace cddp::testing
