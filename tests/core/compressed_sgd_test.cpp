// compressed_sgd_test.cpp — CompressedSGD against torch::optim::SGD, error-feedback
// conservation, the value of error feedback, DGC momentum, stats, serialization, bad input.
#include <cddp/compressed_sgd.h>
#include <cddp/gradient_exchange.h>
#include <cddp/local_communicator.h>

#include "param_state_of.h"
#include "test_plugins.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

using cddp::testing::build_tree_loader;
using cddp::testing::error_of;
using cddp::testing::to_vec;

namespace {

// A two-layer MLP made of raw leaf tensors: 10 → 16 → 3.
struct TinyMlp {
  std::vector<std::pair<std::string, at::Tensor>> params;
  explicit TinyMlp(uint64_t seed) {
    at::manual_seed(seed);
    params = {{"fc1.weight", at::randn({16, 10}) * 0.3}, {"fc1.bias", at::randn({16}) * 0.1},
              {"fc2.weight", at::randn({3, 16}) * 0.3}, {"fc2.bias", at::randn({3}) * 0.1}};
    for (auto& [n, p] : params) p.set_requires_grad(true);
  }
  TinyMlp clone() const {
    TinyMlp c(0);
    for (size_t i = 0; i < params.size(); ++i)
      c.params[i].second = params[i].second.detach().clone().set_requires_grad(true);
    return c;
  }
  std::vector<at::Tensor> tensors() const {
    std::vector<at::Tensor> out;
    for (auto& [n, p] : params) out.push_back(p);
    return out;
  }
  at::Tensor loss(const at::Tensor& x, const at::Tensor& y) const {
    at::Tensor h = at::relu(at::linear(x, params[0].second, params[1].second));
    return at::cross_entropy_loss(at::linear(h, params[2].second, params[3].second), y);
  }
};

struct Batch {
  at::Tensor x, y;
};
Batch batch(int64_t step) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  return {at::randn({32, 10}, gen), at::randint(0, 3, {32}, gen)};
}

struct SgdCase {
  double momentum, dampening, weight_decay;
  bool nesterov, auto_dense;
};

class BitwiseSgd : public ::testing::TestWithParam<SgdCase> {};

TEST_P(BitwiseSgd, Top1RatioOneEqualsTorchSgdFor50Steps) {
  const SgdCase c = GetParam();
  auto loader = build_tree_loader();
  TinyMlp a(1), b = a.clone();
  torch::optim::SGD reference(
      a.tensors(),
      torch::optim::SGDOptions(0.1).momentum(c.momentum).dampening(c.dampening).weight_decay(c.weight_decay).nesterov(c.nesterov));
  cddp::CompressedSGD compressed(b.params, cddp::CompressedSGDOptions(0.1)
                                               .momentum(c.momentum)
                                               .momentum_mode("global")  // SGD's own update
                                               .dampening(c.dampening)
                                               .weight_decay(c.weight_decay)
                                               .nesterov(c.nesterov)
                                               .auto_dense(c.auto_dense)
                                               .compressor(loader.create("topk", {{"ratio", 1.0}})));
  for (int64_t step = 0; step < 50; ++step) {
    Batch d = batch(step);
    reference.zero_grad();
    a.loss(d.x, d.y).backward();
    reference.step();
    compressed.zero_grad();
    b.loss(d.x, d.y).backward();
    compressed.step();
    for (size_t i = 0; i < a.params.size(); ++i)
      ASSERT_TRUE(at::equal(a.params[i].second, b.params[i].second))
          << "parameter " << a.params[i].first << " differs at step " << step;
  }
  // With auto_dense off every tensor really went through top-k, selection and scatter.
  for (const auto& r : compressed.routing())
    EXPECT_EQ(r.route, c.auto_dense ? cddp::Route::Dense : cddp::Route::Sparse) << r.name << ": " << r.reason;
}

INSTANTIATE_TEST_SUITE_P(Options, BitwiseSgd,
                         ::testing::Values(SgdCase{0, 0, 0, false, false}, SgdCase{0.9, 0, 0, false, false},
                                           SgdCase{0.9, 0, 0, true, false}, SgdCase{0.9, 0.1, 1e-3, false, false},
                                           SgdCase{0.9, 0, 5e-4, true, false}, SgdCase{0.9, 0, 5e-4, true, true}));

// The optimizer keeps each sparse average buffer zero between steps and re-zeroes only what the
// previous step wrote. Against a hand-made step whose average comes from a fresh, fully
// cleared output every time (what step() did before), bitwise, over steps whose selection
// jumps to the other half of the tensor; with Nesterov momentum and weight decay, which read
// the average (and must never write into it).
TEST(CompressedSGD, KeptZeroAverageEqualsFullClearReferenceBitwise) {
  auto loader = build_tree_loader();
  const double lr = 0.05, m = 0.9, wd = 1e-3, ratio = 0.01;
  std::vector<at::Tensor> init = {at::randn({64, 64}, at::make_generator<at::CPUGeneratorImpl>(5)),
                                  at::randn({100, 50}, at::make_generator<at::CPUGeneratorImpl>(6))};
  std::vector<std::pair<std::string, at::Tensor>> named = {{"a", init[0].clone()}, {"b", init[1].clone()}};
  std::vector<at::Tensor> ref = {init[0].clone(), init[1].clone()};
  std::vector<at::Tensor> residual = {at::zeros_like(init[0]), at::zeros_like(init[1])}, buf(2);
  cddp::CompressedSGD opt(named, cddp::CompressedSGDOptions(lr).momentum(m).momentum_mode("global").nesterov(true)
                                     .weight_decay(wd).density(ratio)
                                     .compressor(loader.create("topk", {{"ratio", ratio}})));
  auto codec = loader.create("topk", {{"ratio", ratio}});
  cddp::LocalCommunicator local;
  cddp::GradientExchange full_clear(local);
  for (int64_t step = 1; step <= 12; ++step) {
    for (size_t i = 0; i < 2; ++i) {
      at::Tensor g = at::randn(init[i].sizes(), at::make_generator<at::CPUGeneratorImpl>(100 * step + i));
      if (step % 3 == 0) g.view(-1).narrow(0, (step / 3) % 2 ? 0 : g.numel() / 2, g.numel() / 2).mul_(1000);
      named[i].second.mutable_grad() = g.clone();
      // The reference step: feedback, selection, a fresh output cleared in full, SGD.
      at::Tensor gd = g.add(ref[i], wd);
      cddp::CompressContext ctx;
      ctx.step = step;
      ctx.param_index = int64_t(i);
      ctx.param_name = named[i].first;
      ctx.ratio = ratio;
      cddp::Compressed sent = codec->compress_with_feedback(gd, residual[i], ctx);
      at::Tensor avg = at::full({g.numel()}, std::numeric_limits<float>::quiet_NaN());
      std::vector<cddp::SparseSlot> slots = {{&sent, codec.get(), &avg}};
      cddp::StepStats st;
      full_clear.average_sparse(slots, st);
      at::Tensor d_p = avg.view(g.sizes());
      if (!buf[i].defined()) buf[i] = d_p.clone();
      else buf[i].mul_(m).add_(d_p, 1.0);
      ref[i].add_(d_p.add(buf[i], m), -lr);
    }
    opt.step();
    for (size_t i = 0; i < 2; ++i) {
      at::Tensor x = named[i].second.contiguous(), y = ref[i].contiguous();
      ASSERT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()), 0)
          << named[i].first << " differs at step " << step;
    }
  }
  for (const auto& r : opt.routing()) EXPECT_EQ(r.route, cddp::Route::Sparse) << r.name << ": " << r.reason;
}

// decompress(sent) + residual_new == g + residual_old, exactly, at every step — through the
// plugin's compress_with_feedback (whatever path it takes) and the generic base path.
TEST(ErrorFeedback, ConservationIsExactAtEveryStep) {
  auto loader = build_tree_loader();
  for (std::string plugin : {"topk", "randomk"}) {
    auto comp = loader.create(plugin, {{"ratio", 0.05}});
    at::Tensor residual = at::zeros({40, 25});
    for (int64_t step = 1; step <= 20; ++step) {
      at::Tensor g = at::randn({40, 25}, at::make_generator<at::CPUGeneratorImpl>(step));
      at::Tensor before = g + residual;
      cddp::CompressContext ctx;
      ctx.step = step;
      cddp::Compressed sent = comp->compress_with_feedback(g, residual, ctx);
      ASSERT_EQ(sent.count(), 50);
      at::Tensor after = comp->decompress(sent) + residual;
      ASSERT_TRUE(at::equal(after, before)) << plugin << " step " << step;
    }
  }
}

TEST(ErrorFeedback, BeatsNoFeedbackOnLinearRegressionAtOnePercent) {
  auto loader = build_tree_loader();
  auto run = [&](bool ef) {
    at::manual_seed(3);
    at::Tensor x = at::randn({256, 400}), w_true = at::randn({400, 1});
    at::Tensor y = at::matmul(x, w_true);
    at::Tensor w = at::zeros({400, 1}).set_requires_grad(true);
    cddp::CompressedSGD opt({{"w", w}}, cddp::CompressedSGDOptions(0.02).error_feedback(ef).compressor(
                                             loader.create("topk", {{"ratio", 0.01}})));
    double loss = 0;
    for (int step = 0; step < 400; ++step) {
      opt.zero_grad();
      at::Tensor l = at::mse_loss(at::matmul(x, w), y);
      l.backward();
      opt.step();
      loss = l.item<double>();
    }
    return loss;
  };
  const double with_ef = run(true), without_ef = run(false);
  EXPECT_LT(with_ef, without_ef);
  EXPECT_LT(with_ef, 0.5 * without_ef) << "error feedback should help by a wide margin here";
}

TEST(RandomK, ReproducibleAcrossInstancesStandingInForRanks) {
  auto loader = build_tree_loader();
  auto run = [&](uint64_t data_seed) {
    auto w = at::randn({50, 40}, at::make_generator<at::CPUGeneratorImpl>(data_seed)).set_requires_grad(true);
    cddp::CompressedSGD opt({{"w", w}}, cddp::CompressedSGDOptions(0.1).seed(42).auto_dense(false).compressor(
                                             loader.create("randomk", {{"ratio", 0.02}})));
    std::vector<std::vector<int64_t>> picked;
    for (int step = 0; step < 5; ++step) {
      at::Tensor before = w.detach().clone();
      opt.zero_grad();
      (w * w).sum().backward();
      opt.step();
      picked.push_back(to_vec(at::nonzero((w.detach() != before).view(-1)).view(-1)));
    }
    return picked;
  };
  auto rank0 = run(1), rank1 = run(2), rerun = run(1);
  EXPECT_EQ(rank0, rank1);  // different data, same indices: values can be summed directly
  EXPECT_EQ(rank0, rerun);
  EXPECT_NE(rank0[0], rank0[1]);  // a new selection each step
  EXPECT_EQ(rank0[0].size(), 40u);
}

TEST(CompressedSGD, StatsCountRealBytes) {
  auto loader = build_tree_loader();
  at::Tensor w = at::randn({100, 100}).set_requires_grad(true);
  at::Tensor b = at::randn({100}).set_requires_grad(true);
  cddp::CompressedSGD opt({{"w", w}, {"b", b}}, cddp::CompressedSGDOptions(0.1).compress_1d(false).compressor(
                                                        loader.create("topk", {{"ratio", 0.01}})));
  (w.sum() + b.sum()).backward();
  opt.step();
  const auto& s = opt.last_step_stats();
  EXPECT_EQ(s.elements_in, 10100);
  EXPECT_EQ(s.elements_sent, 100 + 100);  // k = 100 of w, b dense
  EXPECT_EQ(s.payload_bytes, 100 * (4 + 4) + 100 * 4);  // fp32 values + int32 indices, dense bias
  EXPECT_EQ(s.bytes_dense_equivalent, 10100 * 4);
  EXPECT_EQ(s.compressed_tensors, 1);
  EXPECT_EQ(s.dense_tensors, 1);
  EXPECT_EQ(opt.cumulative_stats().steps, 1);
  EXPECT_GE(s.compress_ms, 0.0);
}

// The residual is kept in units of the current lr: after lr halves, what was held back at the
// old lr is applied as the same parameter change (Stich et al. 2018), not half of it.
TEST(CompressedSGD, ResidualKeepsItsParameterChangeWhenLrChanges) {
  auto loader = build_tree_loader();
  for (bool scaling : {true, false}) {
    SCOPED_TRACE(scaling ? "residual_lr_scaling on" : "residual_lr_scaling off");
    at::Tensor p = at::zeros({4}).set_requires_grad(true);
    cddp::CompressedSGD opt({{"p", p}}, cddp::CompressedSGDOptions(0.1).residual_lr_scaling(scaling).compressor(
                                            loader.create("topk", {{"ratio", 0.25}})));  // k = 1
    p.mutable_grad() = at::tensor({4.f, 3.f, 2.f, 1.f});
    opt.step();  // sends 4 at index 0; residual [0, 3, 2, 1] at lr 0.1
    EXPECT_TRUE(at::allclose(p.detach(), at::tensor({-0.4f, 0.f, 0.f, 0.f})));
    static_cast<cddp::CompressedSGDOptions&>(opt.param_groups()[0].options()).lr(0.05);
    p.mutable_grad() = at::zeros({4});
    opt.step();  // on: residual x2 = [0, 6, 4, 2], sends 6 -> -0.3 = 0.1 * 3; off: sends 3 -> -0.15
    const float moved = scaling ? -0.3f : -0.15f;
    EXPECT_TRUE(at::allclose(p.detach(), at::tensor({-0.4f, moved, 0.f, 0.f}))) << p;
    auto& st = static_cast<cddp::CompressedSGDParamState&>(*opt.state().begin()->second);
    EXPECT_TRUE(at::allclose(st.residual(), scaling ? at::tensor({0.f, 0.f, 4.f, 2.f}) : at::tensor({0.f, 0.f, 2.f, 1.f})))
        << st.residual();
    EXPECT_EQ(st.residual_lr(), scaling ? 0.05 : 0.0);
  }
}

TEST(CompressedSGD, SkipsParametersWithoutGradient) {
  auto loader = build_tree_loader();
  at::Tensor used = at::ones({10}).set_requires_grad(true), unused = at::ones({10}).set_requires_grad(true);
  cddp::CompressedSGD opt({{"used", used}, {"unused", unused}},
                          cddp::CompressedSGDOptions(0.1).momentum(0.9).compressor(loader.create("topk")));
  used.sum().backward();
  opt.step();
  EXPECT_TRUE(at::equal(unused, at::ones({10})));
  EXPECT_FALSE(at::equal(used, at::ones({10})));
}

TEST(CompressedSGD, ScopeModelSelectsOverAllTensorsTogether) {
  auto loader = build_tree_loader();
  at::Tensor big = at::zeros({4}).set_requires_grad(true), small = at::zeros({4}).set_requires_grad(true);
  cddp::CompressedSGD opt({{"big", big}, {"small", small}}, cddp::CompressedSGDOptions(1.0).scope("model").auto_dense(false).compressor(
                                                                     loader.create("topk", {{"ratio", 0.5}})));
  big.mutable_grad() = at::tensor({10.f, 20.f, 30.f, 40.f});
  small.mutable_grad() = at::tensor({1.f, 2.f, 3.f, 4.f});
  opt.step();
  EXPECT_TRUE(at::equal(big, at::tensor({-10.f, -20.f, -30.f, -40.f})));  // all 4 of k = 4 from `big`
  EXPECT_TRUE(at::equal(small, at::zeros({4})));
  EXPECT_EQ(opt.last_step_stats().elements_sent, 4);
}

// Deep Gradient Compression momentum correction + factor masking, checked by hand:
// u = m·u + g; v = v + u; send top-k of v; v, u zeroed where sent.
TEST(CompressedSGD, DgcMomentumMatchesHandComputation) {
  auto loader = build_tree_loader();
  at::Tensor p = at::zeros({4}).set_requires_grad(true);
  cddp::CompressedSGD opt({{"p", p}}, cddp::CompressedSGDOptions(1.0).momentum(0.5).momentum_mode("dgc").compressor(
                                           loader.create("topk", {{"ratio", 0.25}})));
  p.mutable_grad() = at::tensor({1.f, 2.f, 3.f, 4.f});
  opt.step();  // u = g = [1,2,3,4]; v = [1,2,3,4]; send idx 3 (4); v = [1,2,3,0]; u = [1,2,3,0]
  EXPECT_TRUE(at::equal(p, at::tensor({0.f, 0.f, 0.f, -4.f})));
  p.mutable_grad() = at::tensor({1.f, 1.f, 1.f, 1.f});
  opt.step();  // u = [1.5,2,2.5,1]; v = [2.5,4,5.5,1]; send idx 2 (5.5); u = [1.5,2,0,1]
  EXPECT_TRUE(at::equal(p, at::tensor({0.f, 0.f, -5.5f, -4.f})));
  auto& st = static_cast<cddp::CompressedSGDParamState&>(*opt.state().begin()->second);
  EXPECT_TRUE(at::equal(st.residual(), at::tensor({2.5f, 4.f, 0.f, 1.f})));
  EXPECT_TRUE(at::equal(st.momentum_buffer(), at::tensor({1.5f, 2.f, 0.f, 1.f})));
}

// Forwards everything to another compressor except compress_with_momentum_feedback, which stays
// Compressor's own chain: the host's unfused DGC path, to hold the fused one against.
class UnfusedMomentum final : public cddp::Compressor {
 public:
  explicit UnfusedMomentum(std::shared_ptr<cddp::Compressor> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  cddp::PluginCaps caps() const override { return inner_->caps(); }
  cddp::Compressed compress(const at::Tensor& g, const cddp::CompressContext& ctx) override {
    return inner_->compress(g, ctx);
  }
  void decompress_add_(const cddp::Compressed& c, at::Tensor& dense) const override { inner_->decompress_add_(c, dense); }
  cddp::Compressed compress_with_feedback(const at::Tensor& g, at::Tensor& r, const cddp::CompressContext& ctx) override {
    ++calls;
    return inner_->compress_with_feedback(g, r, ctx);
  }
  bool has_fused_feedback() const noexcept override { return inner_->has_fused_feedback(); }
  double default_density() const noexcept override { return inner_->default_density(); }
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override {
    return inner_->wire_bytes(shape, dtype, density);  // the same routing as the plugin's
  }
  int calls = 0;

 private:
  std::shared_ptr<cddp::Compressor> inner_;
};

// The top-k plugin's fused DGC pass (velocity update inside the selection) against the unfused
// chain, over 20 steps of a model: parameters, velocities and residuals bit for bit.
TEST(CompressedSGD, DgcFusedVelocityUpdateGivesTheUnfusedBits) {
  auto loader = build_tree_loader();
  TinyMlp a(7), b = a.clone();
  auto unfused = std::make_shared<UnfusedMomentum>(loader.create("topk", {{"ratio", 0.1}}));
  auto options = [](std::shared_ptr<cddp::Compressor> c) {
    return cddp::CompressedSGDOptions(0.05).momentum(0.9).momentum_mode("dgc").weight_decay(1e-4).compressor(c);
  };
  cddp::CompressedSGD fused_opt(a.params, options(loader.create("topk", {{"ratio", 0.1}})));
  cddp::CompressedSGD unfused_opt(b.params, options(unfused));
  for (int64_t s = 0; s < 20; ++s) {
    Batch d = batch(s);
    fused_opt.zero_grad();
    a.loss(d.x, d.y).backward();
    fused_opt.step();
    unfused_opt.zero_grad();
    b.loss(d.x, d.y).backward();
    unfused_opt.step();
  }
  EXPECT_EQ(unfused->calls, 20 * 4);  // the unfused chain did run, once per tensor and step
  for (size_t i = 0; i < a.params.size(); ++i) {
    SCOPED_TRACE(a.params[i].first);
    EXPECT_TRUE(at::equal(a.params[i].second, b.params[i].second));
    auto& sa = cddp::detail::param_state_of<cddp::CompressedSGDParamState>(fused_opt.state(), a.params[i].second);
    auto& sb = cddp::detail::param_state_of<cddp::CompressedSGDParamState>(unfused_opt.state(), b.params[i].second);
    EXPECT_TRUE(at::equal(sa.momentum_buffer(), sb.momentum_buffer()));
    EXPECT_TRUE(at::equal(sa.residual(), sb.residual()));
    EXPECT_GT(sa.momentum_buffer().abs().sum().item<double>(), 0);
  }
}

TEST(CompressedSGD, SaveLoadContinuesBitwise) {
  auto loader = build_tree_loader();
  auto make = [&](TinyMlp& m) {
    return std::make_unique<cddp::CompressedSGD>(
        m.params, cddp::CompressedSGDOptions(0.05).momentum(0.9).compressor(loader.create("topk", {{"ratio", 0.1}})));
  };
  TinyMlp a(5);
  auto opt_a = make(a);
  for (int64_t s = 0; s < 5; ++s) {
    Batch d = batch(s);
    opt_a->zero_grad();
    a.loss(d.x, d.y).backward();
    opt_a->step();
  }
  std::stringstream saved;
  torch::save(*opt_a, saved);
  TinyMlp b = a.clone();
  auto opt_b = make(b);
  torch::load(*opt_b, saved);
  EXPECT_EQ(opt_b->step_count(), 5);
  for (int64_t s = 5; s < 10; ++s) {
    Batch d = batch(s);
    opt_a->zero_grad();
    a.loss(d.x, d.y).backward();
    opt_a->step();
    opt_b->zero_grad();
    b.loss(d.x, d.y).backward();
    opt_b->step();
  }
  for (size_t i = 0; i < a.params.size(); ++i) EXPECT_TRUE(at::equal(a.params[i].second, b.params[i].second));
}

TEST(CompressedSGD, NonFiniteGradientNamesParameterAndStep) {
  auto loader = build_tree_loader();
  at::Tensor w = at::ones({8}).set_requires_grad(true);
  cddp::CompressedSGD opt({{"layer3.weight", w}}, cddp::CompressedSGDOptions(0.1).compressor(loader.create("topk")));
  w.mutable_grad() = at::ones({8});
  opt.step();
  w.mutable_grad() = at::tensor({1.f, 1.f, INFINITY, 1.f, 1.f, 1.f, 1.f, 1.f});
  std::string msg = error_of([&] { opt.step(); });
  EXPECT_NE(msg.find("non-finite gradient (NaN or Inf) in parameter 'layer3.weight' at step 2"), std::string::npos)
      << msg;
}

TEST(CompressedSGD, SkipStepLeavesEveryStateUnchanged) {
  auto loader = build_tree_loader();
  at::Tensor w = at::randn({30}).set_requires_grad(true);
  cddp::CompressedSGD opt({{"w", w}}, cddp::CompressedSGDOptions(0.1).momentum(0.9).nonfinite("skip_step").compressor(
                                           loader.create("topk", {{"ratio", 0.1}})));
  w.mutable_grad() = at::randn({30});
  opt.step();
  auto& st = static_cast<cddp::CompressedSGDParamState&>(*opt.state().begin()->second);
  at::Tensor p0 = w.detach().clone(), m0 = st.momentum_buffer().clone(), r0 = st.residual().clone();
  w.mutable_grad() = at::full({30}, NAN);
  opt.step();
  EXPECT_TRUE(opt.last_step_stats().skipped);
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_TRUE(at::equal(w, p0));
  EXPECT_TRUE(at::equal(st.momentum_buffer(), m0));
  EXPECT_TRUE(at::equal(st.residual(), r0));
}

TEST(CompressedSGD, ConstructorRejectsBadOptions) {
  at::Tensor w = at::ones({3}).set_requires_grad(true);
  auto make = [&](cddp::CompressedSGDOptions o) { cddp::CompressedSGD opt(std::vector<at::Tensor>{w}, o); };
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(-0.1)); }).find("Invalid learning rate: -0.1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).momentum(-1)); }).find("Invalid momentum value: -1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).density(0)); })
                .find("Invalid compression ratio (density): 0; expected 0 < ratio <= 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).density(1.5)); })
                .find("Invalid compression ratio (density): 1.5"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).momentum_mode("adam")); })
                .find("Invalid momentum_mode 'adam'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).nonfinite("ignore")); })
                .find("Invalid nonfinite policy 'ignore'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).nesterov(true)); })
                .find("Nesterov momentum requires a momentum"),
            std::string::npos);
  // DGC's momentum correction is per tensor: scope "model" with momentum needs "global".
  EXPECT_NE(error_of([&] { make(cddp::CompressedSGDOptions(0.1).momentum(0.9).scope("model")); })
                .find("scope \"model\" with momentum needs momentum_mode \"global\""),
            std::string::npos);
  EXPECT_NO_THROW(make(cddp::CompressedSGDOptions(0.1).momentum(0.9).scope("model").momentum_mode("global")));
}

TEST(CompressedSGD, RulesOverrideDensityAndRouteDense) {
  auto loader = build_tree_loader();
  at::Tensor a = at::randn({100}).set_requires_grad(true), b = at::randn({100}).set_requires_grad(true);
  cddp::CompressionRule dense_rule;
  dense_rule.match = "head.*";
  dense_rule.dense = true;
  cddp::CompressionRule half;
  half.match = "body.*";
  half.density = 0.5;
  cddp::CompressedSGD opt({{"body.w", a}, {"head.w", b}}, cddp::CompressedSGDOptions(0.1).auto_dense(false).rules({dense_rule, half})
                                                              .compressor(loader.create("topk", {{"ratio", 0.01}})));
  (a.sum() + b.sum()).backward();
  opt.step();
  EXPECT_EQ(opt.last_step_stats().elements_sent, 50 + 100);
  ASSERT_EQ(opt.routing().size(), 2u);
  EXPECT_EQ(opt.routing()[1].route, cddp::Route::Dense);
  EXPECT_EQ(opt.routing()[1].reason, "a rule marks it dense");
}

// Options a param group cannot have for itself (they are optimizer-wide) are refused, naming
// the option — at construction, or at the first step after add_param_group, before anything
// changes.
TEST(CompressedSGD, ParamGroupsRefuseOptimizerWideOptions) {
  auto loader = build_tree_loader();
  auto topk = loader.create("topk", {{"ratio", 0.1}});
  at::Tensor a = at::randn({20}).set_requires_grad(true), b = at::randn({20}).set_requires_grad(true);
  const auto defaults = cddp::CompressedSGDOptions(0.1).compressor(topk);
  auto with_group = [&](cddp::CompressedSGDOptions group) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<at::Tensor>{a});
    groups.emplace_back(std::vector<at::Tensor>{b}, std::make_unique<cddp::CompressedSGDOptions>(group));
    cddp::CompressedSGD opt(groups, defaults);
  };
  auto refused = [&](cddp::CompressedSGDOptions group, const std::string& option) {
    const std::string msg = error_of([&] { with_group(group); });
    EXPECT_NE(msg.find("param group 1 sets " + option + " differently from the optimizer's defaults(); " + option +
                       " is optimizer-wide"),
              std::string::npos)
        << option << ": " << msg;
  };
  refused(cddp::CompressedSGDOptions(defaults).nonfinite("skip_step"), "nonfinite");
  refused(cddp::CompressedSGDOptions(defaults).scope("model"), "scope");
  refused(cddp::CompressedSGDOptions(defaults).index_coding("plain"), "index_coding");
  refused(cddp::CompressedSGDOptions(defaults).track_residual_norm(true), "track_residual_norm");
  refused(cddp::CompressedSGDOptions(defaults).communicator(std::make_shared<cddp::LocalCommunicator>()),
          "communicator");
  EXPECT_NE(error_of([&] { with_group(cddp::CompressedSGDOptions(defaults).lr(-1)); })
                .find("param group 1: Invalid learning rate: -1"),
            std::string::npos);
  EXPECT_NO_THROW(with_group(cddp::CompressedSGDOptions(defaults).lr(0.5).momentum(0.9).density(0.5)));

  // scope "model" makes one selection for every group's tensors: they must agree on it.
  const auto model = cddp::CompressedSGDOptions(defaults).scope("model");
  for (auto [group, option] : {std::pair{cddp::CompressedSGDOptions(model).density(0.5), "density"},
                               std::pair{cddp::CompressedSGDOptions(model).error_feedback(false), "error_feedback"},
                               std::pair{cddp::CompressedSGDOptions(model).seed(7), "seed"},
                               std::pair{cddp::CompressedSGDOptions(model).compressor(loader.create("topk")), "compressor"}}) {
    const std::string msg = error_of([&, group = group] {
      std::vector<torch::optim::OptimizerParamGroup> groups;
      groups.emplace_back(std::vector<at::Tensor>{a});
      groups.emplace_back(std::vector<at::Tensor>{b}, std::make_unique<cddp::CompressedSGDOptions>(group));
      cddp::CompressedSGD opt(groups, model);
    });
    EXPECT_NE(msg.find(std::string("param group 1 sets ") + option + " differently"), std::string::npos) << msg;
  }

  // add_param_group cannot be intercepted: the group is checked at the next step, which then
  // changes nothing.
  cddp::CompressedSGD opt({{"a", a}}, defaults);
  opt.add_param_group(torch::optim::OptimizerParamGroup(
      std::vector<at::Tensor>{b}, std::make_unique<cddp::CompressedSGDOptions>(cddp::CompressedSGDOptions(defaults).scope("model"))));
  a.mutable_grad() = at::ones({20});
  b.mutable_grad() = at::ones({20});
  const at::Tensor a0 = a.detach().clone();
  EXPECT_NE(error_of([&] { opt.step(); }).find("param group 1 sets scope differently"), std::string::npos);
  EXPECT_TRUE(at::equal(a, a0));
  EXPECT_EQ(opt.step_count(), 0);
}

// momentum_mode is honoured per param group: one optimizer with a "global" and a "dgc" group
// moves each parameter exactly as two optimizers, one per mode, do.
TEST(CompressedSGD, MomentumModeIsHonouredPerParamGroup) {
  auto loader = build_tree_loader();
  auto topk = loader.create("topk", {{"ratio", 0.1}});
  auto make = [] { return at::randn({30, 20}, at::make_generator<at::CPUGeneratorImpl>(11)).set_requires_grad(true); };
  at::Tensor g1 = make(), d1 = make(), g2 = make(), d2 = make();
  const auto base = cddp::CompressedSGDOptions(0.05).momentum(0.9).compressor(topk).auto_dense(false);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{g1},
                      std::make_unique<cddp::CompressedSGDOptions>(cddp::CompressedSGDOptions(base).momentum_mode("global")));
  groups.emplace_back(std::vector<at::Tensor>{d1},
                      std::make_unique<cddp::CompressedSGDOptions>(cddp::CompressedSGDOptions(base).momentum_mode("dgc")));
  cddp::CompressedSGD both(groups, base);
  cddp::CompressedSGD global({{"param0", g2}}, cddp::CompressedSGDOptions(base).momentum_mode("global"));
  cddp::CompressedSGD dgc({{"param1", d2}}, cddp::CompressedSGDOptions(base).momentum_mode("dgc"));
  for (int64_t step = 0; step < 8; ++step) {
    at::Tensor grad = at::randn({30, 20}, at::make_generator<at::CPUGeneratorImpl>(50 + step));
    for (at::Tensor p : {g1, d1, g2, d2}) p.mutable_grad() = grad.clone();
    both.step();
    global.step();
    dgc.step();
    ASSERT_TRUE(at::equal(g1, g2)) << "global group, step " << step;
    ASSERT_TRUE(at::equal(d1, d2)) << "dgc group, step " << step;
  }
  EXPECT_FALSE(at::equal(g1, d1));  // the modes really differ
}

TEST(GlobMatch, StarsAndQuestionMarks) {
  EXPECT_TRUE(cddp::glob_match("*.bias", "fc1.bias"));
  EXPECT_TRUE(cddp::glob_match("layer?.*", "layer1.0.conv1.weight"));
  EXPECT_FALSE(cddp::glob_match("layer?.*", "layer10.weight"));
  EXPECT_TRUE(cddp::glob_match("*", ""));
  EXPECT_FALSE(cddp::glob_match("fc", "fc1"));
}

}  // namespace

// ---------------------------------------------------------------- codecs that are not selections

// Conservation for a quantizer inside CompressedSGD, at W = 1 where the average is this rank's
// own D(C(acc)): after each step, the parameter moved by −lr·D and the residual holds acc − D,
// so D + e_t == g + e_{t−1} entry by entry, to fp32's rounding of one subtraction.
TEST(PayloadCodecs, ResidualHoldsWhatTheQuantizerDidNotSend) {
  auto loader = build_tree_loader();
  for (std::string plugin : {"qsgd", "terngrad", "natural", "sign", "cast"}) {
    at::Tensor w = at::zeros({40, 25});
    w.set_requires_grad(true);
    cddp::CompressedSGD opt(std::vector<at::Tensor>{w},
                            cddp::CompressedSGDOptions(1.0).compressor(loader.create(plugin)).seed(3));
    at::Tensor residual = at::zeros({40, 25});
    for (int64_t step = 1; step <= 5; ++step) {
      at::Tensor g = at::randn({40, 25}, at::make_generator<at::CPUGeneratorImpl>(step));
      const at::Tensor before = w.detach().clone();
      w.mutable_grad() = g.clone();
      opt.step();
      EXPECT_EQ(opt.routing().back().route, plugin == "cast" ? cddp::Route::Sum : cddp::Route::Gather) << plugin;
      const at::Tensor sent = before - w.detach();  // lr 1: D(C(acc))
      const auto& st = static_cast<const cddp::CompressedSGDParamState&>(*opt.state().begin()->second);
      const at::Tensor acc = g + residual;
      EXPECT_TRUE(at::allclose(sent + st.residual(), acc, 1e-6, 1e-6)) << plugin << " step " << step;
      EXPECT_GT((sent - acc).abs().max().item<float>(), 0.0f) << plugin << ": nothing was lost, so nothing compressed";
      residual = st.residual().clone();
      EXPECT_LT(opt.last_step_stats().payload_bytes, 40 * 25 * 4) << plugin;
    }
  }
}

// The plugin's declared state lives in the optimizer's ParamState, goes into the checkpoint
// beside the residual, and comes back bitwise: rounds_mean counts its calls there.
// A format-version-2 checkpoint, written as the version-2 code wrote one (CompressedSGD::save
// from 846bc29 to 427a0eb^, the commit before plugin_state): torch's optimizer layout, the
// options' eleven keys (unchanged since), a param state of momentum_buffer, residual and
// residual_lr and nothing else, then cddp_format_version = 2 and cddp_step. ParamStateV2 is
// that version's CompressedSGDParamState::serialize, copied from the history; WriterV2 holds
// the live optimizer's groups and keys with such states, and torch::optim::serialize writes
// them through the same template the version-2 save went through.
struct ParamStateV2 : public torch::optim::OptimizerCloneableParamState<ParamStateV2> {
  TORCH_ARG(at::Tensor, momentum_buffer);
  TORCH_ARG(at::Tensor, residual);
  TORCH_ARG(double, residual_lr) = 0;

 public:
  void serialize(torch::serialize::OutputArchive& archive) const override {
    _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
    _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual);
    _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual_lr);
  }
};

// p's state, under the key LibTorch uses: the TensorImpl address as text in 1.13, the address in 2.x.
template <class StateMap>
const cddp::CompressedSGDParamState& state_of(const StateMap& state, const at::Tensor& p) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    std::ostringstream key;
    key << p.unsafeGetTensorImpl();
    return static_cast<const cddp::CompressedSGDParamState&>(*state.at(key.str()));
  } else {
    return static_cast<const cddp::CompressedSGDParamState&>(*state.at(p.unsafeGetTensorImpl()));
  }
}

class WriterV2 final : public torch::optim::Optimizer {
 public:
  explicit WriterV2(const cddp::CompressedSGD& live)
      : Optimizer(live.param_groups(), std::make_unique<cddp::CompressedSGDOptions>(live.defaults_options())),
        step_(live.step_count()) {
    for (const auto& [key, state] : live.state()) {
      const auto& s = static_cast<const cddp::CompressedSGDParamState&>(*state);
      auto v2 = std::make_unique<ParamStateV2>();
      v2->momentum_buffer(s.momentum_buffer()).residual(s.residual()).residual_lr(s.residual_lr());
      state_[key] = std::move(v2);
    }
  }
  at::Tensor step(LossClosure) override { TORCH_CHECK(false, "a writer only writes"); }
  void save(torch::serialize::OutputArchive& archive) const override {
    torch::optim::serialize<ParamStateV2, cddp::CompressedSGDOptions>(archive, *this);
    archive.write("cddp_format_version", c10::IValue(int64_t{2}));
    archive.write("cddp_step", c10::IValue(step_));
  }

 private:
  int64_t step_;
};

TEST(CompressedSGD, LoadsAFormatVersion2CheckpointAndContinuesBitwise) {
  auto loader = build_tree_loader();
  auto make = [&](TinyMlp& m) {
    return std::make_unique<cddp::CompressedSGD>(
        m.params, cddp::CompressedSGDOptions(0.05).momentum(0.9).residual_lr_scaling(true).compressor(
                      loader.create("topk", {{"ratio", 0.1}})));
  };
  TinyMlp a(11);
  auto opt_a = make(a);
  for (int64_t s = 0; s < 4; ++s) {
    Batch d = batch(s);
    opt_a->zero_grad();
    a.loss(d.x, d.y).backward();
    opt_a->step();
  }
  std::stringstream saved;
  {
    torch::serialize::OutputArchive archive;
    WriterV2(*opt_a).save(archive);
    archive.save_to(saved);
  }
  {  // it is a version-2 file: no plugin state anywhere, the version says 2
    torch::serialize::InputArchive in;
    std::stringstream copy(saved.str());
    in.load_from(copy);
    c10::IValue version;
    ASSERT_TRUE(in.try_read("cddp_format_version", version));
    EXPECT_EQ(version.toInt(), 2);
  }
  EXPECT_EQ(saved.str().find("plugin_state"), std::string::npos);

  TinyMlp b = a.clone();
  auto opt_b = make(b);
  torch::load(*opt_b, saved);
  EXPECT_EQ(opt_b->step_count(), 4);
  ASSERT_EQ(opt_b->state().size(), opt_a->state().size());
  for (size_t i = 0; i < a.params.size(); ++i) {  // each parameter's state, by its own key
    const cddp::CompressedSGDParamState& sa = state_of(opt_a->state(), a.params[i].second);
    const cddp::CompressedSGDParamState& sb = state_of(opt_b->state(), b.params[i].second);
    const std::string name = a.params[i].first;
    ASSERT_TRUE(sa.residual().defined()) << name;
    EXPECT_TRUE(at::equal(sb.residual(), sa.residual())) << name;
    EXPECT_TRUE(at::equal(sb.momentum_buffer(), sa.momentum_buffer())) << name;
    EXPECT_EQ(sb.residual_lr(), 0.05) << name;
    EXPECT_TRUE(sb.plugin_state().empty()) << name;
  }
  for (int64_t s = 4; s < 8; ++s) {
    Batch d = batch(s);
    opt_a->zero_grad();
    a.loss(d.x, d.y).backward();
    opt_a->step();
    opt_b->zero_grad();
    b.loss(d.x, d.y).backward();
    opt_b->step();
  }
  for (size_t i = 0; i < a.params.size(); ++i)
    EXPECT_TRUE(at::equal(a.params[i].second, b.params[i].second)) << a.params[i].first;
}

TEST(PayloadCodecs, PluginStateIsSavedAndRestored) {
  cddp::PluginLoader rounds_loader(cddp::PluginSearchPath::standard({CDDP_TEST_ROUNDS_PLUGIN_DIR}, nullptr));
  auto make = [&](at::Tensor& w) {
    return std::make_unique<cddp::CompressedSGD>(
        std::vector<at::Tensor>{w}, cddp::CompressedSGDOptions(0.1).momentum(0.9).compressor(rounds_loader.create("rounds_mean")));
  };
  at::Tensor a = at::ones({8, 4});
  a.set_requires_grad(true);
  auto opt_a = make(a);
  for (int64_t s = 1; s <= 3; ++s) {
    a.mutable_grad() = at::full({8, 4}, float(s));
    opt_a->step();
  }
  EXPECT_EQ(opt_a->routing().back().route, cddp::Route::Rounds);
  const auto& sa = static_cast<const cddp::CompressedSGDParamState&>(*opt_a->state().begin()->second);
  ASSERT_EQ(sa.plugin_state().count("calls"), 1u);
  EXPECT_EQ(sa.plugin_state().at("calls").item<float>(), 3.0f);
  std::stringstream saved;
  torch::save(*opt_a, saved);
  at::Tensor b = a.detach().clone();
  b.set_requires_grad(true);
  auto opt_b = make(b);
  torch::load(*opt_b, saved);
  const auto& sb = static_cast<const cddp::CompressedSGDParamState&>(*opt_b->state().begin()->second);
  ASSERT_EQ(sb.plugin_state().count("calls"), 1u);
  EXPECT_EQ(sb.plugin_state().at("calls").item<float>(), 3.0f);
  for (auto* pair : {&a, &b}) pair->mutable_grad() = at::full({8, 4}, 4.0f);
  opt_a->step();
  opt_b->step();
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_EQ(sb.plugin_state().at("calls").item<float>(), 4.0f);
}

// Plugin state that does not match what the plugin declares (a checkpoint of another plugin or
// model) stops the step before anything is sent, naming the parameter and the plugin.
TEST(PayloadCodecs, SavedStateOfTheWrongShapeIsAClearError) {
  cddp::PluginLoader rounds_loader(cddp::PluginSearchPath::standard({CDDP_TEST_ROUNDS_PLUGIN_DIR}, nullptr));
  at::Tensor w = at::ones({8, 4});
  w.set_requires_grad(true);
  cddp::CompressedSGD opt(std::vector<std::pair<std::string, at::Tensor>>{{"fc.weight", w}},
                          cddp::CompressedSGDOptions(0.1).compressor(rounds_loader.create("rounds_mean")));
  w.mutable_grad() = at::ones({8, 4});
  opt.step();
  auto& st = static_cast<cddp::CompressedSGDParamState&>(*opt.state().begin()->second);
  st.plugin_state()["calls"] = at::zeros({3});
  const std::string msg = cddp::testing::error_of([&] { opt.step(); });
  EXPECT_NE(msg.find("parameter 'fc.weight': the saved state 'calls' of compressor 'rounds_mean'"), std::string::npos)
      << msg;
}

// A selection with an index out of range is a clear error naming the plugin and the parameter,
// with error feedback (inside the plugin's own decode) and without (the host's check).
TEST(BadPlugins, SelectionIndexOutOfRangeNamesPluginAndParameter) {
  cddp::PluginLoader bad(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  for (bool ef : {true, false}) {
    at::Tensor w = at::zeros({10, 10});
    w.set_requires_grad(true);
    cddp::CompressedSGD opt(std::vector<std::pair<std::string, at::Tensor>>{{"fc1.weight", w}},
                            cddp::CompressedSGDOptions(0.1).compressor(bad.create("badindex")).error_feedback(ef));
    w.mutable_grad() = at::ones({10, 10});
    const std::string msg = cddp::testing::error_of([&] { opt.step(); });
    EXPECT_NE(msg.find("'badindex'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("parameter 'fc1.weight'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("index 100"), std::string::npos) << msg;
    EXPECT_NE(msg.find("out of range [0, 100)"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("index out of range in self"), std::string::npos) << msg;
  }
}

// The non-finite guard's bit test: ±Inf and NaNs of either sign are caught in float and double
// (here past the first SIMD block), while the largest finite values, subnormals and −0 are not.
TEST(CompressedSGD, NonFiniteGuardCatchesEveryInfAndNaNAndNothingElse) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const double big = dtype == at::kFloat ? 3.4028234663852886e38 : 1.7976931348623157e308;
    const double tiny = dtype == at::kFloat ? 1.4e-45 : 4.9e-324;
    for (double bad : {double(INFINITY), -double(INFINITY), double(NAN), -double(NAN), big, -big, tiny, -0.0}) {
      at::Tensor w = at::zeros({1000}, at::TensorOptions(dtype));
      w.set_requires_grad(true);
      cddp::CompressedSGD opt(std::vector<at::Tensor>{w}, cddp::CompressedSGDOptions(0.0).nonfinite("skip_step"));
      at::Tensor g = at::zeros({1000}, at::TensorOptions(dtype));
      g[777] = bad;
      w.mutable_grad() = g;
      opt.step();
      EXPECT_EQ(opt.last_step_stats().skipped, !std::isfinite(bad)) << bad << " " << dtype;
    }
  }
}
