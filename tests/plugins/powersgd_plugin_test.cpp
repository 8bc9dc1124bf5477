// powersgd_plugin_test.cpp — the powersgd plugin (PowerSGD, Vogels et al., NeurIPS 2019),
// loaded from cddp_powersgd.so and run over W = 1, 2, 3 in-process ranks
// (thread_communicator.h): the average is the mean of the ranks' P·Qᵀ recomputed here in
// float64 with plain ATen ops; low-rank gradients come back exactly; warm start keeps Q and
// converges to the truncated SVD; the first start_iter steps, 1-D tensors and matrices that do
// not pay are dense and exact; the state round-trips (directly and through a CompressedSGD
// checkpoint); the router sends what does not pay dense; bad parameters are clear errors.
// It will not compare with PyTorch's own hook (powersgd_torch_compare_test.cpp) or run in
// several processes (dist_payload_test).
#include <cddp/compressed_sgd.h>
#include <cddp/plugin_loader.h>

#include "powersgd_math.h"
#include "test_plugins.h"
#include "thread_communicator.h"
#include "bitwise_equal.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <cstring>
#include <memory>
#include <sstream>

using cddp::testing::error_of;
using cddp::testing::on_ranks;

namespace {

constexpr uint64_t kSeed = 42;

using cddp::testing::bitwise_equal;

double rel_diff(const at::Tensor& got, const at::Tensor& want) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>() / scale;
}

std::shared_ptr<cddp::PluginCompressor> make(const cddp::ParamMap& params = {}) {
  static cddp::PluginLoader loader = cddp::testing::build_tree_loader();
  return loader.create("powersgd", params);
}

// The RoundCollective the host would hand in, over an in-process communicator; counts rounds.
class Collective final : public cddp::RoundCollective {
 public:
  explicit Collective(cddp::Communicator& c) : c_(c) {}
  int world_size() const override { return c_.world_size(); }
  void allreduce_sum_(at::Tensor& t) override {
    ++rounds;
    c_.allreduce_sum_(t);
  }
  int rounds = 0;

 private:
  cddp::Communicator& c_;
};

cddp::CompressContext ctx_of(int64_t step, int world, int64_t param = 0) {
  cddp::CompressContext c;
  c.step = step;
  c.param_index = param;
  c.param_name = "fc.weight";
  c.seed = kSeed;
  c.world_size = world;
  return c;
}

// W ranks, each with its own PluginState, run steps one call at a time.
struct Ranks {
  std::shared_ptr<cddp::PluginCompressor> codec;
  int world;
  std::vector<cddp::PluginState> state;
  std::vector<at::Tensor> average, approx;
  std::vector<int> rounds;

  Ranks(std::shared_ptr<cddp::PluginCompressor> c, int w, const std::vector<int64_t>& shape)
      : codec(std::move(c)), world(w), state(w), average(w), approx(w), rounds(w) {
    for (auto& s : state)
      for (const auto& spec : codec->state_specs(shape, at::kFloat)) s[spec.name] = at::zeros(spec.shape, spec.dtype);
  }
  // acc[r] is rank r's acc = g + e; step as the optimizer counts it (from 1).
  void step(const std::vector<at::Tensor>& acc, int64_t step, int64_t param = 0) {
    on_ranks(world, [&](cddp::Communicator& comm, int r) {
      Collective coll(comm);
      average[r] = at::empty({acc[r].numel()});
      approx[r] = at::empty({acc[r].numel()});
      codec->run_rounds(acc[r], state[r], coll, ctx_of(step, world, param), average[r], approx[r]);
      rounds[r] = coll.rounds;
    });
  }
};

// ---- the reference, in float64 with plain ATen ops ----

// Orthonormal columns of a [n, r]: Gram-Schmidt written out for r ≤ 2, the Q of a reduced QR
// for r > 2 (PyTorch's hook makes the same choice, and QR's signs differ from Gram-Schmidt's).
at::Tensor orthonormal(const at::Tensor& a) {
  at::Tensor x = a.to(at::kDouble).clone();
  if (x.size(1) > 2) return std::get<0>(at::linalg_qr(x, "reduced"));
  for (int64_t i = 0; i < x.size(1); ++i) {
    at::Tensor c = x.select(1, i);
    c.div_(c.norm());
    for (int64_t j = i + 1; j < x.size(1); ++j) x.select(1, j).sub_(at::dot(c, x.select(1, j)) * c);
  }
  return x;
}

// The seeded initial Q [m, r] the plugin draws for (param, step).
at::Tensor initial_q(int64_t m, int64_t r, int64_t param, int64_t step) {
  at::Generator g = at::detail::createCPUGenerator(cddp::powersgd::q_seed(kSeed, param, step));
  return at::randn({1, m, r}, g, at::kFloat).squeeze(0);
}

struct Expected {
  at::Tensor p, q, average;  // P [n, r] orthonormal, mean Q [m, r], P·Qᵀ [n, m]
};

// One PowerSGD step from q0 (not yet orthogonalized) on the ranks' matrices m[w] [n, m].
Expected by_hand(const std::vector<at::Tensor>& mats, const at::Tensor& q0) {
  const at::Tensor q = orthonormal(q0);
  at::Tensor psum = at::zeros({mats[0].size(0), q.size(1)}, at::kDouble);
  for (const auto& m : mats) psum += at::mm(m.to(at::kDouble), q);  // Σ_w M_w·Q
  Expected e;
  e.p = orthonormal(psum);
  at::Tensor avg = at::zeros({mats[0].size(0), mats[0].size(1)}, at::kDouble);
  e.q = at::zeros({mats[0].size(1), q.size(1)}, at::kDouble);
  for (const auto& m : mats) {
    at::Tensor qw = at::mm(m.to(at::kDouble).t(), e.p);  // Q_w = M_wᵀ·P
    avg += at::mm(e.p, qw.t());                          // P·Q_wᵀ
    e.q += qw;
  }
  e.average = avg / double(mats.size());
  e.q /= double(mats.size());
  return e;
}

std::vector<at::Tensor> random_grads(int world, const std::vector<int64_t>& shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  std::vector<at::Tensor> out;
  for (int w = 0; w < world; ++w) out.push_back(at::randn(shape, g));
  return out;
}

std::vector<at::Tensor> as_matrices(const std::vector<at::Tensor>& t) {
  std::vector<at::Tensor> out;
  for (const auto& x : t) out.push_back(x.reshape({x.size(0), -1}));
  return out;
}

// ---- the protocol ----

TEST(PowerSgd, AverageIsTheMeanOfTheRanksPQtAtW123) {
  for (int world : {1, 2, 3})
    for (int64_t rank : {1, 2, 4}) {
      const std::vector<int64_t> shape{24, 4, 3, 3};  // viewed as 24 × 36
      Ranks ranks(make({{"rank", rank}, {"start_iter", int64_t(0)}, {"keep_p", true}}), world, shape);
      const auto grads = random_grads(world, shape, 100 + world * 10 + rank);
      ranks.step(grads, 1, 3);
      const Expected e = by_hand(as_matrices(grads), initial_q(36, rank, 3, 1));
      for (int r = 0; r < world; ++r) {
        EXPECT_EQ(ranks.rounds[r], 2) << "P, then Q";
        EXPECT_TRUE(bitwise_equal(ranks.average[r], ranks.average[0])) << "rank " << r;
        EXPECT_TRUE(bitwise_equal(ranks.approx[r], ranks.average[r])) << "e = M − P·Qᵀ, the hook's error";
        EXPECT_LE(rel_diff(ranks.average[r].view({24, 36}), e.average), 1e-5) << "W " << world << " r " << rank;
        EXPECT_LE(rel_diff(ranks.state[r].at("q"), e.q), 1e-5) << "the mean Q is kept";
        EXPECT_LE(rel_diff(ranks.state[r].at("p"), e.p), 1e-5);
      }
      // P is orthonormal.
      at::Tensor p = ranks.state[0].at("p").to(at::kDouble);
      EXPECT_LE((at::mm(p.t(), p) - at::eye(rank, at::kDouble)).abs().max().item<double>(), 1e-5);
    }
}

TEST(PowerSgd, RankOneGradientIsRecoveredExactly) {
  const int64_t n = 30, m = 20;
  at::Generator g = at::detail::createCPUGenerator(5);
  at::Tensor u = at::randn({n, 1}, g), v = at::randn({1, m}, g);
  at::Tensor grad = at::mm(u, v);  // rank 1
  for (int world : {1, 2, 3}) {
    Ranks ranks(make({{"rank", int64_t(1)}, {"start_iter", int64_t(0)}}), world, {n, m});
    ranks.step(std::vector<at::Tensor>(world, grad), 1);
    const double err = rel_diff(ranks.average[0].view({n, m}), grad);
    EXPECT_LE(err, 2e-6) << "W " << world;
    EXPECT_LE(rel_diff(ranks.approx[0].view({n, m}), grad), 2e-6) << "the residual is ~0";
  }
}

TEST(PowerSgd, RankRGradientsSharingAColumnSpaceAreRecoveredAtAnyW) {
  // M_w = U·B_w, U [n, r]: Σ M_w·Q spans col(U), so P·Pᵀ·M_w = M_w on every rank.
  const int64_t n = 40, m = 25, r = 4;
  at::Generator g = at::detail::createCPUGenerator(6);
  at::Tensor u = at::randn({n, r}, g);
  for (int world : {1, 2, 3}) {
    std::vector<at::Tensor> grads;
    at::Tensor mean = at::zeros({n, m});
    for (int w = 0; w < world; ++w) {
      grads.push_back(at::mm(u, at::randn({r, m}, g)));
      mean += grads.back();
    }
    mean /= world;
    Ranks ranks(make({{"rank", r}, {"start_iter", int64_t(0)}}), world, {n, m});
    ranks.step(grads, 1);
    EXPECT_LE(rel_diff(ranks.average[0].view({n, m}), mean), 1e-5) << "W " << world;
    for (int w = 0; w < world; ++w) EXPECT_LE(rel_diff(ranks.approx[w].view({n, m}), mean), 1e-5);
  }
}

TEST(PowerSgd, WarmStartKeepsQAndConvergesToTheTruncatedSvd) {
  const int64_t n = 32, m = 24, r = 2;
  at::Generator g = at::detail::createCPUGenerator(7);
  // A spectrum with a gap after r: σ = 10, 8, 1, 0.5, ...
  at::Tensor a = std::get<0>(at::linalg_qr(at::randn({n, m}, g), "reduced"));
  at::Tensor b = std::get<0>(at::linalg_qr(at::randn({m, m}, g), "reduced"));
  at::Tensor s = at::full({m}, 0.1f);
  s[0] = 10, s[1] = 8, s[2] = 1, s[3] = 0.5;
  const at::Tensor grad = at::mm(a * s, b.t());
  const double best = s.narrow(0, r, m - r).pow(2).sum().sqrt().item<double>();  // ‖M − M_r‖_F

  Ranks warm(make({{"rank", r}, {"start_iter", int64_t(0)}}), 2, {n, m});
  Ranks cold(make({{"rank", r}, {"start_iter", int64_t(0)}, {"warm_start", false}}), 2, {n, m});
  at::Tensor q_before;
  for (int64_t step = 1; step <= 12; ++step) {
    const std::vector<at::Tensor> grads(2, grad);
    q_before = warm.state[0].at("q").clone();
    warm.step(grads, step);
    cold.step(grads, step);
    if (step == 2) {
      // Step 2 starts from the orthogonalized mean Q of step 1, not from a new draw.
      const Expected e = by_hand({grad, grad}, q_before);
      EXPECT_LE(rel_diff(warm.average[0].view({n, m}), e.average), 1e-5);
      const Expected fresh = by_hand({grad, grad}, initial_q(m, r, 0, 2));
      EXPECT_LE(rel_diff(cold.average[0].view({n, m}), fresh.average), 1e-5) << "no warm start: a new draw";
    }
  }
  const double warm_err = (grad - warm.average[0].view({n, m})).norm().item<double>();
  const double cold_err = (grad - cold.average[0].view({n, m})).norm().item<double>();
  EXPECT_LE(warm_err, best * (1 + 1e-3)) << "subspace iteration over the steps";
  EXPECT_GT(cold_err, warm_err);
}

TEST(PowerSgd, FirstStartIterStepsAreDenseAndExact) {
  const int64_t n = 16, m = 12;
  const int world = 3;
  Ranks ranks(make({{"rank", int64_t(2)}, {"start_iter", int64_t(3)}}), world, {n, m});
  for (int64_t step = 1; step <= 4; ++step) {
    const auto grads = random_grads(world, {n, m}, 200 + step);
    ranks.step(grads, step);
    const at::Tensor mean = ((grads[0] + grads[1]) + grads[2]).div_(world).reshape(-1);  // rank order, then /W
    for (int r = 0; r < world; ++r) {
      if (step <= 3) {
        EXPECT_EQ(ranks.rounds[r], 1) << "step " << step;
        EXPECT_TRUE(bitwise_equal(ranks.average[r], mean)) << "step " << step;
        EXPECT_TRUE(bitwise_equal(ranks.approx[r], grads[r].reshape(-1))) << "nothing lost, no residual";
        EXPECT_EQ(ranks.state[r].at("q").count_nonzero().item<int64_t>(), 0) << "Q not drawn yet";
      } else {
        EXPECT_EQ(ranks.rounds[r], 2);
        EXPECT_GT(rel_diff(ranks.average[r], mean), 1e-3) << "rank 2 of a random 16 × 12";
        const Expected e = by_hand(grads, initial_q(m, 2, 0, 4));
        EXPECT_LE(rel_diff(ranks.average[r].view({n, m}), e.average), 1e-5);
      }
    }
  }
}

TEST(PowerSgd, VectorsAndMatricesThatDoNotPayAreDenseWithoutState) {
  auto codec = make();  // rank 4, min_compression_rate 2
  // [8, 64]: (8 + 64)·4·2 = 576 ≥ 512; [64]: 1-D; [3, 1, 5, 5] → 3 × 25: r = 3, 168 ≥ 75.
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{8, 64}, {64}, {3, 1, 5, 5}}) {
    EXPECT_TRUE(codec->state_specs(shape, at::kFloat).empty());
    Ranks ranks(codec, 2, shape);
    const auto grads = random_grads(2, shape, 300);
    ranks.step(grads, 50);
    EXPECT_EQ(ranks.rounds[0], 1);
    EXPECT_TRUE(bitwise_equal(ranks.average[1], (grads[0] + grads[1]).div_(2).reshape(-1)));
    EXPECT_TRUE(bitwise_equal(ranks.approx[1], grads[1].reshape(-1)));
  }
}

TEST(PowerSgd, QIsTheSameDrawOnEveryRankWhateverTheGlobalRng) {
  const int world = 3;
  Ranks ranks(make({{"start_iter", int64_t(0)}, {"keep_p", true}}), world, {20, 30});
  const auto grads = random_grads(world, {20, 30}, 400);
  on_ranks(world, [&](cddp::Communicator& comm, int r) {
    at::manual_seed(1000 + r);  // a different global RNG on every rank: it must not matter
    Collective coll(comm);
    ranks.average[r] = at::empty({600});
    ranks.approx[r] = at::empty({600});
    ranks.codec->run_rounds(grads[r], ranks.state[r], coll, ctx_of(1, world), ranks.average[r], ranks.approx[r]);
  });
  for (int r = 1; r < world; ++r) {
    EXPECT_TRUE(bitwise_equal(ranks.average[r], ranks.average[0]));
    EXPECT_TRUE(bitwise_equal(ranks.state[r].at("q"), ranks.state[0].at("q")));
    EXPECT_TRUE(bitwise_equal(ranks.state[r].at("p"), ranks.state[0].at("p")));
  }
  // Another parameter index or step draws another Q.
  const Expected other = by_hand(as_matrices(grads), initial_q(30, 4, 1, 1));
  EXPECT_GT(rel_diff(ranks.average[0].view({20, 30}), other.average), 1e-3);
}

TEST(PowerSgd, ZeroGradientsGiveZerosNotNaNAndQIsDrawnAgain) {
  for (double eps : {0.0, 1e-8})
    for (int64_t rank : {1, 4}) {
      Ranks ranks(make({{"rank", rank}, {"start_iter", int64_t(0)}, {"orthogonalization_epsilon", eps}}), 2, {24, 24});
      const std::vector<at::Tensor> zeros(2, at::zeros({24, 24}));
      ranks.step(zeros, 1);
      EXPECT_EQ(ranks.average[0].count_nonzero().item<int64_t>(), 0) << "eps " << eps << " r " << rank;
      EXPECT_TRUE(at::isfinite(ranks.average[0]).all().item<bool>());
      EXPECT_EQ(ranks.state[0].at("q").count_nonzero().item<int64_t>(), 0);
      // The next nonzero gradient is compressed from a fresh draw (step 2's), not from Q = 0.
      const auto grads = random_grads(2, {24, 24}, 500);
      ranks.step(grads, 2);
      const Expected e = by_hand(grads, initial_q(24, rank, 0, 2));
      EXPECT_LE(rel_diff(ranks.average[0].view({24, 24}), e.average), 1e-5) << "eps " << eps << " r " << rank;
    }
}

TEST(PowerSgd, StateRoundTripsAndResumeIsBitwise) {
  const std::vector<int64_t> shape{24, 18};
  const cddp::ParamMap params{{"rank", int64_t(2)}, {"start_iter", int64_t(1)}};
  Ranks straight(make(params), 2, shape), resumed(make(params), 2, shape);
  std::vector<std::vector<at::Tensor>> grads;
  for (int64_t s = 1; s <= 6; ++s) grads.push_back(random_grads(2, shape, 600 + s));
  for (int64_t s = 1; s <= 6; ++s) straight.step(grads[s - 1], s);
  for (int64_t s = 1; s <= 3; ++s) resumed.step(grads[s - 1], s);
  // Save the state, load it into a new plugin instance, go on.
  Ranks again(make(params), 2, shape);
  for (int r = 0; r < 2; ++r) {
    std::stringstream buf;
    torch::save(std::vector<at::Tensor>{resumed.state[r].at("q")}, buf);
    std::vector<at::Tensor> loaded;
    torch::load(loaded, buf);
    again.state[r]["q"] = loaded.at(0);
  }
  for (int64_t s = 4; s <= 6; ++s) again.step(grads[s - 1], s);
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(bitwise_equal(again.average[r], straight.average[r]));
    EXPECT_TRUE(bitwise_equal(again.state[r].at("q"), straight.state[r].at("q")));
  }
}

// ---- through the host ----

TEST(PowerSgd, CompressedSgdRoutesAndCheckpointsIt) {
  auto make_opt = [&](std::vector<std::pair<std::string, at::Tensor>>& p) {
    return std::make_unique<cddp::CompressedSGD>(
        p, cddp::CompressedSGDOptions(0.1).momentum(0.9).compressor(make({{"start_iter", int64_t(2)}})));
  };
  auto params = [] {
    at::Generator g = at::detail::createCPUGenerator(8);
    std::vector<std::pair<std::string, at::Tensor>> p{{"w1", at::randn({64, 32}, g)},
                                                      {"b1", at::randn({64}, g)},
                                                      {"w2", at::randn({8, 64}, g)}};
    for (auto& [n, t] : p) t.set_requires_grad(true);
    return p;
  };
  auto grads_at = [](int64_t step, const at::Tensor& t) {
    at::Generator g = at::detail::createCPUGenerator(900 + step);
    return at::randn(t.sizes(), g);
  };
  auto a = params();
  auto opt_a = make_opt(a);
  for (int64_t s = 1; s <= 4; ++s) {
    for (auto& [n, t] : a) t.mutable_grad() = grads_at(s, t);
    opt_a->step();
  }
  std::map<std::string, cddp::Route> routes;
  for (const auto& d : opt_a->routing()) routes[d.name] = d.route;
  EXPECT_EQ(routes["w1"], cddp::Route::Rounds);
  EXPECT_EQ(routes["b1"], cddp::Route::Dense) << "1-D";
  EXPECT_EQ(routes["w2"], cddp::Route::Dense) << "(8 + 64)·4·2 ≥ 8·64";
  std::stringstream saved;
  torch::save(*opt_a, saved);
  auto b = params();
  for (size_t i = 0; i < a.size(); ++i) b[i].second.data().copy_(a[i].second.data());
  auto opt_b = make_opt(b);
  torch::load(*opt_b, saved);
  for (int64_t s = 5; s <= 7; ++s) {
    for (auto* side : {&a, &b})
      for (auto& [n, t] : *side) t.mutable_grad() = grads_at(s, t);
    opt_a->step();
    opt_b->step();
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(bitwise_equal(a[i].second, b[i].second)) << a[i].first;
}

// ---- the schema and the cost model ----

TEST(PowerSgd, CapsStateSpecsAndWireBytes) {
  auto codec = make();
  EXPECT_EQ(codec->caps().kind, cddp::PayloadKind::Rounds);
  EXPECT_FALSE(codec->caps().selection);
  const auto specs = codec->state_specs({64, 4, 3, 3}, at::kFloat);  // 64 × 36, r = 4
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name, "q");
  EXPECT_EQ(specs[0].shape, (std::vector<int64_t>{36, 4}));
  EXPECT_EQ(specs[0].dtype, at::kFloat);
  EXPECT_EQ(codec->wire_bytes({64, 4, 3, 3}, at::kFloat, -1), 4 * (64 + 36) * 4);
  EXPECT_EQ(codec->wire_bytes({8, 64}, at::kFloat, -1), 8 * 64 * 4) << "does not pay: a dense allreduce's";
  EXPECT_EQ(codec->wire_bytes({100}, at::kFloat, -1), 400);
  auto with_p = make({{"keep_p", true}, {"rank", int64_t(2)}});
  const auto specs_p = with_p->state_specs({64, 36}, at::kFloat);
  ASSERT_EQ(specs_p.size(), 2u);
  EXPECT_EQ(specs_p[1].name, "p");
  EXPECT_EQ(specs_p[1].shape, (std::vector<int64_t>{64, 2}));
  // r is clamped to min(n, m); min_compression_rate 0 compresses every matrix.
  auto all = make({{"rank", int64_t(16)}, {"min_compression_rate", 0.0}});
  EXPECT_EQ(all->state_specs({3, 5}, at::kFloat).at(0).shape, (std::vector<int64_t>{5, 3}));
}

TEST(PowerSgd, BadParametersAndInputsAreClearErrors) {
  std::string msg = error_of([] { make({{"rank", int64_t(0)}}); });
  EXPECT_NE(msg.find("parameter 'rank' = 0 is out of range [1, "), std::string::npos) << msg;
  msg = error_of([] { make({{"start_iter", int64_t(-1)}}); });
  EXPECT_NE(msg.find("'start_iter'"), std::string::npos) << msg;
  msg = error_of([] { make({{"orthogonalization_epsilon", -1e-8}}); });
  EXPECT_NE(msg.find("'orthogonalization_epsilon'"), std::string::npos) << msg;
  msg = error_of([] { make({{"warm_start", int64_t(1)}}); });
  EXPECT_NE(msg.find("'warm_start' must be a bool"), std::string::npos) << msg;
  msg = error_of([] { make({{"ratio", 0.1}}); });
  EXPECT_NE(msg.find("unknown parameter 'ratio'"), std::string::npos) << msg;

  auto codec = make({{"start_iter", int64_t(0)}});
  cddp::testing::ThreadWorld world(1);
  cddp::testing::ThreadCommunicator comm(world, 0);
  Collective coll(comm);
  at::Tensor acc = at::randn({32, 16}), avg = at::empty({512}), approx = at::empty({512});  // q [16, 4]
  cddp::PluginState state{{"q", at::zeros({16, 4})}};
  acc[3][4] = std::numeric_limits<float>::quiet_NaN();
  msg = error_of([&] { codec->run_rounds(acc, state, coll, ctx_of(5, 1), avg, approx); });
  EXPECT_NE(msg.find("non-finite value (NaN or Inf) in parameter 'fc.weight' at step 5"), std::string::npos) << msg;
  acc[3][4] = 0;
  cddp::PluginState wrong{{"q", at::zeros({16, 2})}};
  msg = error_of([&] { codec->run_rounds(acc, wrong, coll, ctx_of(5, 1), avg, approx); });
  EXPECT_NE(msg.find("needs the state 'q' Float[16, 4]"), std::string::npos) << msg;
  msg = error_of([&] { codec->run_rounds(acc.to(at::kHalf), state, coll, ctx_of(5, 1), avg, approx); });
  EXPECT_NE(msg.find("expected float32 or float64"), std::string::npos) << msg;
}

}  // namespace
