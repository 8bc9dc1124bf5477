// compressed_adamw_test.cpp — CompressedAdamW: bitwise torch::optim::AdamW without compression
// (both modes, 50 steps), the onebit warm-up and frozen variance against a hand computation,
// exact error-feedback conservation on the momentum, ranks bitwise identical over thread ranks
// with every payload kind (selection, gather, sum, rounds), checkpoints that resume bitwise,
// clear load and option errors. It does not measure accuracy or speed.
#include <cddp/compressed_adamw.h>
#include <cddp/compressed_sgd.h>
#include <cddp/local_communicator.h>

#include "test_plugins.h"
#include "thread_communicator.h"
#include "bitwise_equal.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

using cddp::testing::build_tree_loader;
using cddp::testing::error_of;
using cddp::testing::on_ranks;

namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// A 2-D weight large enough to compress, a bias, a small matrix; values seeded.
Named make_params(uint64_t seed) {
  at::manual_seed(seed);
  Named p = {{"w", at::randn({40, 30}) * 0.3}, {"b", at::randn({30}) * 0.1}, {"v", at::randn({5, 6}) * 0.2}};
  for (auto& [n, t] : p) t.set_requires_grad(true);
  return p;
}

Named clone_params(const Named& src) {
  Named out;
  for (const auto& [n, t] : src) out.emplace_back(n, t.detach().clone().set_requires_grad(true));
  return out;
}

// Gradient of parameter i at `step` on `rank`: deterministic, different per rank.
at::Tensor grad_for(const at::Tensor& p, size_t i, int64_t step, int rank = 0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7919 * step + 31 * int64_t(i) + 100003 * rank);
  return at::randn(p.sizes(), gen) * (0.5 + 0.1 * double(i));
}

void set_grads(Named& params, int64_t step, int rank = 0) {
  for (size_t i = 0; i < params.size(); ++i) params[i].second.mutable_grad() = grad_for(params[i].second, i, step, rank);
}

using cddp::testing::bitwise_equal;

const cddp::CompressedAdamWParamState& state_of(const cddp::CompressedAdamW& opt, const at::Tensor& p) {
  for (const auto& [key, s] : opt.state()) {
    const auto& st = static_cast<const cddp::CompressedAdamWParamState&>(*s);
    if (st.exp_avg().defined() && st.exp_avg().sizes() == p.sizes()) return st;
  }
  throw std::runtime_error("no state");
}

std::shared_ptr<cddp::Communicator> borrowed(cddp::Communicator& c) {
  return std::shared_ptr<cddp::Communicator>(&c, [](cddp::Communicator*) {});
}

struct AdamCase {
  std::string mode;
  bool amsgrad;
  double weight_decay;
};

class BitwiseAdamW : public ::testing::TestWithParam<AdamCase> {};

}  // namespace

TEST_P(BitwiseAdamW, NoCompressorEqualsTorchAdamWFor50Steps) {
  const AdamCase c = GetParam();
  Named ours = make_params(1), theirs = clone_params(ours);
  std::vector<at::Tensor> theirs_t;
  for (auto& [n, t] : theirs) theirs_t.push_back(t);
  cddp::CompressedAdamW opt(ours, cddp::CompressedAdamWOptions(3e-3).betas({0.8, 0.99}).weight_decay(c.weight_decay)
                                      .amsgrad(c.amsgrad).mode(c.mode).warmup_steps(10));
  torch::optim::AdamW ref(theirs_t, torch::optim::AdamWOptions(3e-3).betas({0.8, 0.99}).weight_decay(c.weight_decay)
                                        .amsgrad(c.amsgrad));
  for (int64_t s = 1; s <= 50; ++s) {
    set_grads(ours, s);
    set_grads(theirs, s);
    opt.step();
    ref.step();
    for (size_t i = 0; i < ours.size(); ++i)
      ASSERT_TRUE(bitwise_equal(ours[i].second, theirs[i].second)) << c.mode << " step " << s << " " << ours[i].first;
  }
  EXPECT_EQ(opt.step_count(), 50);
  EXPECT_EQ(opt.routing().back().route, cddp::Route::Dense);
}

INSTANTIATE_TEST_SUITE_P(Modes, BitwiseAdamW,
                         ::testing::Values(AdamCase{"onebit", false, 1e-2}, AdamCase{"naive", false, 1e-2},
                                           AdamCase{"naive", true, 0.0}, AdamCase{"onebit", false, 0.0}));

// Past the warm-up the variance stays as it was at step `warmup`, the momentum is the (single
// rank's) average of what was sent, and the update uses the frozen bias correction.
TEST(CompressedAdamW, OneBitFreezesVarianceAndMatchesHandComputation) {
  auto loader = build_tree_loader();
  Named params = {{"w", (at::randn({40, 30}) * 0.3).set_requires_grad(true)}};
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  const int64_t warmup = 3;
  cddp::CompressedAdamW opt(params, cddp::CompressedAdamWOptions(lr).weight_decay(wd).warmup_steps(warmup)
                                        .compressor(loader.create("topk", {{"ratio", 0.05}})));
  at::Tensor m = at::zeros({40, 30}, at::kDouble), v = at::zeros({40, 30}, at::kDouble);
  at::Tensor p = params[0].second.detach().to(at::kDouble), e = at::zeros({40, 30}, at::kDouble);
  at::Tensor v_frozen;
  for (int64_t s = 1; s <= 8; ++s) {
    set_grads(params, s);
    const at::Tensor g = params[0].second.grad().to(at::kDouble);
    opt.step();
    const auto& st = state_of(opt, params[0].second);
    p = p * (1 - lr * wd);
    if (s <= warmup) {
      EXPECT_EQ(opt.routing().back().reason, "onebit warm-up (dense AdamW)");
      m = b1 * m + (1 - b1) * g;
      v = b2 * v + (1 - b2) * g * g;
      p = p - lr / (1 - std::pow(b1, s)) * m / (v.sqrt() / std::sqrt(1 - std::pow(b2, s)) + eps);
      EXPECT_EQ(st.variance_frozen_at(), 0);
      if (s == warmup) v_frozen = st.exp_avg_sq().clone();
    } else {
      EXPECT_EQ(opt.routing().back().route, cddp::Route::Sparse);
      EXPECT_EQ(st.variance_frozen_at(), warmup);
      EXPECT_TRUE(bitwise_equal(st.exp_avg_sq(), v_frozen)) << "the variance moved at step " << s;
      const at::Tensor acc = b1 * m + (1 - b1) * g + e;  // m_local + e
      m = st.exp_avg().to(at::kDouble);                  // what was sent (one rank: the mean)
      e = st.residual().to(at::kDouble);
      EXPECT_EQ(at::count_nonzero(st.exp_avg()).item<int64_t>(), 60) << "top-k 5 % of 1200 entries";
      EXPECT_TRUE(at::allclose(m + e, acc, 1e-5, 1e-7)) << "sent + residual = m_local + old residual";
      p = p - lr / (1 - std::pow(b1, s)) * m / (v.sqrt() / std::sqrt(1 - std::pow(b2, warmup)) + eps);
    }
    EXPECT_TRUE(at::allclose(st.exp_avg().to(at::kDouble), m, 1e-5, 1e-7)) << "step " << s;
    EXPECT_TRUE(at::allclose(params[0].second.detach().to(at::kDouble), p, 1e-5, 1e-6)) << "step " << s;
  }
  EXPECT_LT(opt.last_step_stats().bytes_sent, 40 * 30 * 4 / 4);
}

// sent + residual_new == m_local + residual_old, bitwise, at every compressed step.
TEST(CompressedAdamW, OneBitConservationIsExact) {
  auto loader = build_tree_loader();
  Named params = make_params(3);
  const double b1 = 0.9;
  cddp::CompressedAdamW opt(params, cddp::CompressedAdamWOptions(1e-3).warmup_steps(2).compressor(
                                        loader.create("topk", {{"ratio", 0.1}})));
  at::Tensor w = params[0].second;
  for (int64_t s = 1; s <= 12; ++s) {
    set_grads(params, s);
    const bool compressed = s > 2;
    at::Tensor m_before, e_before;
    if (s > 1) {
      const auto& st = state_of(opt, w);
      m_before = st.exp_avg().clone();
      e_before = st.residual().defined() ? st.residual().clone() : at::zeros_like(w);
    }
    const at::Tensor g = w.grad().clone();
    opt.step();
    if (!compressed) continue;
    const auto& st = state_of(opt, w);
    const at::Tensor m_local = m_before.mul(b1).add_(g, 1 - b1);
    const at::Tensor sent = st.exp_avg();  // one rank: the mean of what was sent is what was sent
    EXPECT_TRUE(bitwise_equal(sent + st.residual(), m_local + e_before)) << "step " << s;
    EXPECT_GT(st.residual().abs().max().item<float>(), 0.f) << "nothing held back: nothing compressed";
  }
}

// W = 3 thread ranks with different gradients: parameters, both moments and the step count end
// bitwise identical on every rank, with every payload kind; the residuals differ (they are local).
TEST(CompressedAdamW, RanksEndBitwiseIdenticalWithEveryPayloadKind) {
  auto loader = build_tree_loader();
  cddp::PluginLoader rounds_loader(cddp::PluginSearchPath::standard({CDDP_TEST_ROUNDS_PLUGIN_DIR}, nullptr));
  struct Kind {
    std::string plugin;
    cddp::Route route;
  };
  for (const auto& [mode, kind] : std::vector<std::pair<std::string, Kind>>{
           {"onebit", {"topk", cddp::Route::Sparse}}, {"onebit", {"sign", cddp::Route::Gather}},
           {"onebit", {"cast", cddp::Route::Sum}}, {"onebit", {"rounds_mean", cddp::Route::Rounds}},
           {"naive", {"topk", cddp::Route::Sparse}}, {"naive", {"sign", cddp::Route::Gather}}}) {
    SCOPED_TRACE(mode + " " + kind.plugin);
    const int W = 3;
    const Named initial = make_params(11);  // before the threads: at::manual_seed is global
    std::vector<Named> params(W);
    for (auto& p : params) p = clone_params(initial);
    std::vector<at::Tensor> residuals(W);
    std::vector<cddp::Route> routes(W);
    on_ranks(W, [&, mode = mode, kind = kind](cddp::Communicator& comm, int r) {
      auto compressor = kind.plugin == "rounds_mean" ? rounds_loader.create(kind.plugin)
                        : kind.plugin == "topk"     ? loader.create("topk", {{"ratio", 0.05}})
                                                    : loader.create(kind.plugin);
      cddp::CompressedAdamW opt(params[r], cddp::CompressedAdamWOptions(1e-2).mode(mode).warmup_steps(2)
                                               .compressor(compressor).auto_dense(false).communicator(borrowed(comm)));
      for (int64_t s = 1; s <= 6; ++s) {
        set_grads(params[r], s, r);
        opt.step();
      }
      routes[r] = opt.routing().back().route;
      residuals[r] = state_of(opt, params[r][0].second).residual().clone();
    });
    EXPECT_EQ(routes[0], kind.route);
    for (int r = 1; r < W; ++r)
      for (size_t i = 0; i < params[0].size(); ++i)
        EXPECT_TRUE(bitwise_equal(params[r][i].second, params[0][i].second)) << "rank " << r << " " << params[0][i].first;
    if (kind.plugin != "rounds_mean")  // rounds_mean's approximation is the exact mean: no residual left
      EXPECT_FALSE(bitwise_equal(residuals[0], residuals[1])) << "residuals are per rank";
  }
}

// Saved after the variance froze (residual, both moments, frozen step, plugin state) and
// loaded into a fresh optimizer, it continues bitwise like the one that never stopped.
TEST(CompressedAdamW, SaveLoadResumesBitwise) {
  auto loader = build_tree_loader();
  for (std::string plugin : {"topk", "sign"}) {
    SCOPED_TRACE(plugin);
    auto make = [&](Named& p) {
      return std::make_unique<cddp::CompressedAdamW>(
          p, cddp::CompressedAdamWOptions(1e-2).warmup_steps(3).compressor(
                 plugin == "topk" ? loader.create("topk", {{"ratio", 0.1}}) : loader.create(plugin)));
    };
    Named a = make_params(5);
    auto opt_a = make(a);
    for (int64_t s = 1; s <= 6; ++s) set_grads(a, s), opt_a->step();
    std::stringstream saved;
    torch::save(*opt_a, saved);
    Named b = clone_params(a);
    auto opt_b = make(b);
    torch::load(*opt_b, saved);
    EXPECT_EQ(opt_b->step_count(), 6);
    const auto& sb = state_of(*opt_b, b[0].second);
    EXPECT_EQ(sb.variance_frozen_at(), 3);
    EXPECT_TRUE(bitwise_equal(sb.residual(), state_of(*opt_a, a[0].second).residual()));
    for (int64_t s = 7; s <= 12; ++s) {
      set_grads(a, s), opt_a->step();
      set_grads(b, s), opt_b->step();
    }
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(bitwise_equal(a[i].second, b[i].second)) << a[i].first;
  }
}

TEST(CompressedAdamW, LoadRefusesOtherOptimizersVersionsAndModes) {
  Named p = make_params(2);
  cddp::CompressedSGD sgd(p, cddp::CompressedSGDOptions(0.1));
  set_grads(p, 1);
  sgd.step();
  std::stringstream sgd_saved;
  torch::save(sgd, sgd_saved);
  cddp::CompressedAdamW adam(p, cddp::CompressedAdamWOptions(1e-3));
  EXPECT_NE(error_of([&] { torch::load(adam, sgd_saved); }).find("this is a CompressedSGD state"), std::string::npos);

  adam.step();
  torch::serialize::OutputArchive out;
  adam.save(out);
  out.write("cddp_adamw_format_version", c10::IValue(int64_t(99)));
  std::stringstream future;
  out.save_to(future);
  cddp::CompressedAdamW adam2(p, cddp::CompressedAdamWOptions(1e-3));
  EXPECT_NE(error_of([&] { torch::load(adam2, future); })
                .find("CompressedAdamW state has format version 99, this build reads version 1"),
            std::string::npos);

  std::stringstream onebit_saved;
  torch::save(adam, onebit_saved);
  cddp::CompressedAdamW naive(p, cddp::CompressedAdamWOptions(1e-3).mode("naive"));
  EXPECT_NE(error_of([&] { torch::load(naive, onebit_saved); })
                .find("state of mode \"onebit\" cannot be loaded into an optimizer of mode \"naive\""),
            std::string::npos);
  cddp::CompressedSGD sgd2(p, cddp::CompressedSGDOptions(0.1));
  std::stringstream again;
  torch::save(adam, again);
  EXPECT_NE(error_of([&] { torch::load(sgd2, again); }).find("no cddp_format_version"), std::string::npos);
}

TEST(CompressedAdamW, ConstructorRejectsBadOptionsNamingThem) {
  Named p = make_params(2);
  auto error_for = [&](cddp::CompressedAdamWOptions o) {
    return error_of([&] { cddp::CompressedAdamW opt(p, o); });
  };
  EXPECT_NE(error_for(cddp::CompressedAdamWOptions().mode("zero")).find("Invalid mode 'zero'"), std::string::npos);
  EXPECT_NE(error_for(cddp::CompressedAdamWOptions().warmup_steps(0)).find("Invalid warmup_steps: 0"),
            std::string::npos);
  EXPECT_NE(error_for(cddp::CompressedAdamWOptions().betas({1.0, 0.9})).find("beta parameter at index 0"),
            std::string::npos);
  EXPECT_NE(error_for(cddp::CompressedAdamWOptions().amsgrad(true)).find("amsgrad needs mode \"naive\""),
            std::string::npos);
  EXPECT_NE(error_for(cddp::CompressedAdamWOptions().density(2)).find("Invalid compression ratio"), std::string::npos);
  // warmup_steps does not matter in naive mode.
  EXPECT_NO_THROW(cddp::CompressedAdamW(p, cddp::CompressedAdamWOptions().mode("naive").warmup_steps(0)));
}

TEST(CompressedAdamW, NonFiniteGradientNamesParameterAndSkipStepChangesNothing) {
  Named p = make_params(4);
  cddp::CompressedAdamW opt(p, cddp::CompressedAdamWOptions(1e-3));
  set_grads(p, 1);
  p[1].second.mutable_grad()[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { opt.step(); }).find("parameter 'b' at step 1"), std::string::npos);

  cddp::CompressedAdamW skip(p, cddp::CompressedAdamWOptions(1e-3).nonfinite("skip_step"));
  const at::Tensor before = p[0].second.detach().clone();
  skip.step();
  EXPECT_TRUE(skip.last_step_stats().skipped);
  EXPECT_EQ(skip.step_count(), 0);
  EXPECT_TRUE(bitwise_equal(p[0].second, before));
}
