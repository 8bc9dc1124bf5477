// dist_payload_test.cpp — every codec that is not a selection (plugin ABI v2: gather, sum and
// rounds payloads) trained in real processes over Gloo at W = 2 and 4: after 20 steps every
// rank holds bitwise identical parameters, equal to W workers simulated in one process with
// the same plugin (its encode, own decode for the residual, and combine / summed decode; a
// rounds plugin over W in-process ranks), and each tensor took its kind's route (or the dense
// one where the plugin's cost model says so: PowerSGD's biases).
// It will not test the plugins' statistics (tests/plugins) or selections (dist_training_test).
#include "dist_common.h"
#include "dist_launch.h"
#include "thread_communicator.h"

#include <cddp/payload_exchange.h>
#include <cddp/plugin_loader.h>

#include <algorithm>
#include <cstdlib>

#include <torch/serialize.h>

namespace cddp::disttest {
namespace {

constexpr int kSteps = 20;
constexpr double kLr = 0.1, kMomentum = 0.9;

// What dist_worker's CompressedSGD tells the plugin for parameter i at `step` (seed 42).
CompressContext context_of(int64_t step, size_t i, const std::string& name, int world) {
  CompressContext ctx;
  ctx.step = step;
  ctx.param_index = int64_t(i);
  ctx.param_name = name;
  ctx.seed = 42;
  ctx.ratio = 0.01;
  ctx.world_size = world;
  return ctx;
}

struct Case {
  std::string plugin, params;  // --params for dist_worker
  int world;
  const char* route;
  double tolerance;  // to the simulated reference (relative): the collectives' sum order differs for sums
  std::vector<std::string> dense = {};  // parameters the plugin's cost model sends dense instead

  const char* route_of(const std::string& param) const {
    return std::count(dense.begin(), dense.end(), param) ? "dense-allreduce" : route;
  }
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string p = info.param.params;
  for (char& c : p)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return info.param.plugin + (p.empty() ? "" : "_" + p) + "_W" + std::to_string(info.param.world);
}

std::string plugin_dirs() { return std::string(CDDP_TEST_PLUGIN_DIR) + ":" + CDDP_ROUNDS_PLUGIN_DIR; }

// The cases pass one k=v; the value typed as dist_worker types it: integer, then number, else string.
ParamMap params_of(const std::string& text) {
  ParamMap out;
  const auto eq = text.find('=');
  if (eq == std::string::npos) return out;
  const std::string k = text.substr(0, eq), v = text.substr(eq + 1);
  char* end = nullptr;
  const long long i = std::strtoll(v.c_str(), &end, 10);
  if (!v.empty() && *end == '\0') return out[k] = int64_t(i), out;
  const double d = std::strtod(v.c_str(), &end);
  if (!v.empty() && *end == '\0') return out[k] = d, out;
  out[k] = v;
  return out;
}

// A rounds plugin: W in-process ranks (thread_communicator.h), each with its own plugin state,
// doing what the host does: acc = g + e, run_rounds through a RoundCollective, e = acc − approx;
// the tensors the case routes dense are the plain mean of g. SGD momentum on the average.
std::vector<at::Tensor> simulated_rounds(const Case& c, std::shared_ptr<PluginCompressor> codec) {
  auto named = make_params(7);
  std::vector<std::vector<at::Tensor>> result(c.world);
  cddp::testing::on_ranks(c.world, [&](Communicator& comm, int rank) {
    std::vector<at::Tensor> p, e, buf(named.size());
    std::vector<PluginState> state(named.size());
    for (size_t i = 0; i < named.size(); ++i) {
      p.push_back(named[i].second.detach().clone());
      e.push_back(at::zeros_like(p[i]));
      for (const auto& spec : codec->state_specs(p[i].sizes().vec(), at::kFloat))
        state[i][spec.name] = at::zeros(spec.shape, spec.dtype);
    }
    StepStats stats;
    CountingRoundCollective coll(comm, stats);
    for (int64_t step = 1; step <= kSteps; ++step) {
      const std::vector<at::Tensor> g = grads_of(p, make_batch(rank, step));
      for (size_t i = 0; i < p.size(); ++i) {
        at::Tensor avg = at::empty({p[i].numel()});
        if (std::string(c.route_of(named[i].first)) == "dense-allreduce") {
          avg = g[i].reshape(-1).clone();
          comm.allreduce_sum_(avg);
          avg.div_(c.world);
        } else {
          const at::Tensor acc = g[i] + e[i];
          at::Tensor approx = at::empty({p[i].numel()});
          const CompressContext ctx = context_of(step, i, named[i].first, c.world);
          codec->run_rounds(acc, state[i], coll, ctx, avg, approx);
          e[i] = acc - approx.view(acc.sizes());
        }
        at::Tensor d_p = avg.view(p[i].sizes());
        buf[i] = buf[i].defined() ? buf[i].mul_(kMomentum).add_(d_p) : d_p.clone();
        p[i].add_(buf[i], -kLr);
      }
    }
    result[rank] = p;
  });
  for (int r = 1; r < c.world; ++r)
    for (size_t i = 0; i < result[0].size(); ++i) EXPECT_TRUE(at::equal(result[0][i], result[r][i])) << "simulated rank " << r;
  return result[0];
}

// W workers in one process, exchanging what the processes exchange: per parameter each rank
// encodes acc = g + e, keeps e = acc − D(own payload), and all apply the aggregate (combine
// of the payloads in rank order, or the summed parts decoded), with SGD momentum on it, as
// torch::optim::SGD does. Rounds plugins: simulated_rounds.
std::vector<at::Tensor> simulated(const Case& c) {
  at::set_num_threads(1);
  PluginLoader loader(PluginSearchPath::standard({CDDP_TEST_PLUGIN_DIR, CDDP_ROUNDS_PLUGIN_DIR}, nullptr));
  std::shared_ptr<PluginCompressor> codec = loader.create(c.plugin, params_of(c.params));
  const PayloadKind kind = codec->caps().kind;
  if (kind == PayloadKind::Rounds) return simulated_rounds(c, codec);
  auto named = make_params(7);
  std::vector<at::Tensor> p;
  for (auto& [n, t] : named) p.push_back(t.detach().clone());
  const size_t P = p.size();
  std::vector<std::vector<at::Tensor>> e(c.world);
  for (auto& er : e)
    for (auto& t : p) er.push_back(at::zeros_like(t));
  std::vector<at::Tensor> buf(P);
  for (int64_t step = 1; step <= kSteps; ++step) {
    std::vector<std::vector<at::Tensor>> g(c.world);
    for (int r = 0; r < c.world; ++r) g[r] = grads_of(p, make_batch(r, step));
    for (size_t i = 0; i < P; ++i) {
      at::Tensor mean = at::zeros({p[i].numel()});
      std::vector<Payload> payloads;
      for (int r = 0; r < c.world; ++r) {
        at::Tensor acc = g[r][i] + e[r][i];
        const CompressContext ctx = context_of(step, i, named[i].first, c.world);
        PluginState none;
        payloads.push_back(codec->encode(acc, none, ctx));
        at::Tensor own = at::zeros({p[i].numel()});
        codec->decode_add_(payloads.back(), own);
        e[r][i] = acc - own.view(acc.sizes());
      }
      if (kind == PayloadKind::Gather) {
        codec->combine(payloads, mean);
      } else if (kind == PayloadKind::Sum) {
        Payload sum = payloads[0];
        for (auto& part : sum.parts) part = part.clone();
        for (int r = 1; r < c.world; ++r)
          for (size_t j = 0; j < sum.parts.size(); ++j) sum.parts[j] = sum.parts[j] + payloads[r].parts[j];
        codec->decode_sum(sum, c.world, mean);
      }
      at::Tensor d_p = mean.view(p[i].sizes());
      buf[i] = buf[i].defined() ? buf[i].mul_(kMomentum).add_(d_p) : d_p.clone();
      p[i].add_(buf[i], -kLr);
    }
  }
  return p;
}

class MultiProcessPayloads : public ::testing::TestWithParam<Case> {};

TEST_P(MultiProcessPayloads, RanksBitwiseIdenticalAndMatchTheSimulation) {
  const Case c = GetParam();
  const auto dir = scratch_dir("payload_" + case_name({c, 0}));
  JobRun run = run_workers(c.world, {"train", "--compressor", c.plugin, "--params", c.params, "--steps",
                                     std::to_string(kSteps), "--lr", std::to_string(kLr), "--momentum",
                                     std::to_string(kMomentum), "--out", dir.string(), "--plugin-dir", plugin_dirs(),
                                     "--timeout", "30"});
  ASSERT_EQ(run.code, 0) << run.all();
  for (int r = 0; r < c.world; ++r) {
    EXPECT_EQ(run.count(r, "STEP "), kSteps) << run.all();
    for (const char* p : {"w1", "b1", "w2", "b2"})
      EXPECT_NE(run.text(r).find(std::string("ROUTE ") + p + " " + c.route_of(p)), std::string::npos)
          << "rank " << r << " " << p << "\n" << run.all();
  }
  std::vector<std::vector<at::Tensor>> params(c.world);
  for (int r = 0; r < c.world; ++r)
    torch::load(params[r], (dir / ("params_rank" + std::to_string(r) + ".pt")).string());
  ASSERT_EQ(params[0].size(), 4u);
  for (int r = 1; r < c.world; ++r)
    for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(at::equal(params[0][i], params[r][i])) << "rank " << r << " tensor " << i;
  EXPECT_FALSE(at::equal(params[0][0], tensors_of(make_params(7))[0].detach())) << "training moved nothing";
  const std::vector<at::Tensor> ref = simulated(c);
  double worst = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(at::isfinite(params[0][i]).all().item<bool>());
    const double scale = std::max(ref[i].abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (params[0][i] - ref[i]).abs().max().item<double>() / scale);
  }
  EXPECT_LE(worst, c.tolerance) << case_name({c, 0});
  std::printf("%s: max relative difference to the simulation %.3g\n", case_name({c, 0}).c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(
    Dist, MultiProcessPayloads,
    ::testing::Values(Case{"sign", "variant=scaled", 2, "gather-allgather", 1e-6},
                      Case{"sign", "variant=scaled", 4, "gather-allgather", 1e-6},
                      Case{"sign", "variant=signsgd", 2, "gather-allgather", 1e-6},
                      Case{"sign", "variant=onebit", 4, "gather-allgather", 1e-6},
                      Case{"qsgd", "", 2, "gather-allgather", 1e-6}, Case{"qsgd", "", 4, "gather-allgather", 1e-6},
                      Case{"terngrad", "", 2, "gather-allgather", 1e-6},
                      Case{"terngrad", "", 4, "gather-allgather", 1e-6},
                      Case{"natural", "", 2, "gather-allgather", 1e-6},
                      Case{"natural", "", 4, "gather-allgather", 1e-6},
                      Case{"cast", "dtype=fp16", 2, "sum-allreduce", 1e-3},
                      Case{"cast", "dtype=fp16", 4, "sum-allreduce", 1e-3},
                      Case{"cast", "dtype=bf16", 2, "sum-allreduce", 1e-2},
                      Case{"rounds_mean", "", 2, "rounds-allreduce", 1e-5},
                      Case{"rounds_mean", "", 4, "rounds-allreduce", 1e-5},
                      // rank 2: w1 [64, 32] and w2 [8, 64] pay, the biases go dense; the
                      // default start_iter 10 makes half of the 20 steps dense.
                      Case{"powersgd", "rank=2", 2, "rounds-allreduce", 1e-5, {"b1", "b2"}},
                      Case{"powersgd", "rank=2", 4, "rounds-allreduce", 1e-5, {"b1", "b2"}}),
    case_name);

}  // namespace
}  // namespace cddp::disttest
