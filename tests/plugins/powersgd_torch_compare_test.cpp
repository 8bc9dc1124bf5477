// powersgd_torch_compare_test.cpp — the powersgd plugin against the real peer: PyTorch's
// powerSGD_hook (torch.distributed.algorithms.ddp_comm_hooks, PowerSGD of Vogels et al.,
// NeurIPS 2019) in /usr/bin/python3, two processes over Gloo (powersgd_torch_reference.py).
// Both sides get the same gradients for every rank and step and draw the same initial Q (the
// hook's seed comes from our q_seed(); LibTorch and torch share the CPU generator). Ours runs
// at W = 2 in-process with the host's error feedback written out (acc = g + e, e = acc −
// approx), the hook with its own. Over the first 5 compressed steps (and the dense ones before
// them) the decompressed gradient, P and Q agree within 1e-5 relative (max |ours − theirs| /
// max |theirs|, per tensor), for rank 1 (ε = 1e-8, no warm start), 2 (Gram-Schmidt) and
// 4 (QR, with and without warm start).
// Skips, saying why, when /usr/bin/python3 (or $CDDP_TEST_PYTHON) cannot import the hook or
// has no Gloo. It will not compare tensors that are not compressed after the start (the hook
// keeps e = M − mean for those; the host keeps none): every parameter here is compressed.
#include <cddp/plugin_loader.h>

#include "powersgd_math.h"
#include "test_plugins.h"
#include "thread_communicator.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using cddp::testing::on_ranks;

namespace {

constexpr int kWorld = 2;
constexpr uint64_t kSeed = 42;
constexpr int kCompressedSteps = 5;
constexpr double kTolerance = 1e-5;

struct Config {
  std::string name;
  int64_t rank, start_iter;
  bool warm_start;
  double epsilon;
  int64_t steps() const { return start_iter + kCompressedSteps; }
};

const std::vector<Config> kConfigs = {
    {"r4_warm", 4, 0, true, 0.0},    // QR (r > 2)
    {"r2_start2", 2, 2, true, 0.0},  // Gram-Schmidt, two dense steps first
    {"r1_cold_eps", 1, 0, false, 1e-8},
    {"r4_cold", 4, 0, false, 0.0},
};
// Every one compressed at every rank above: (n + m)·r·2 < n·m.
const std::vector<std::vector<int64_t>> kShapes = {{32, 16}, {16, 4, 3, 3}, {64, 24}};

std::string python() {
  const char* p = std::getenv("CDDP_TEST_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return {-1, "popen failed"};
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  const int status = ::pclose(f);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

void write_bin(const fs::path& path, const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(c.data_ptr()), std::streamsize(c.numel() * sizeof(float)));
  ASSERT_TRUE(f.good()) << path;
}

at::Tensor read_bin(const fs::path& path, int64_t numel) {
  at::Tensor t = at::empty({numel}, at::kFloat);
  std::ifstream f(path, std::ios::binary);
  f.read(static_cast<char*>(t.data_ptr()), std::streamsize(numel * sizeof(float)));
  EXPECT_TRUE(f.good() && f.peek() == std::char_traits<char>::eof()) << path << ": not " << numel << " floats";
  return t;
}

double rel_diff(const at::Tensor& ours, const at::Tensor& theirs) {
  const double scale = std::max(theirs.abs().max().item<double>(), 1e-30);
  return (ours.reshape(-1).to(at::kDouble) - theirs.reshape(-1).to(at::kDouble)).abs().max().item<double>() / scale;
}

int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

class Collective final : public cddp::RoundCollective {
 public:
  explicit Collective(cddp::Communicator& c) : c_(c) {}
  int world_size() const override { return c_.world_size(); }
  void allreduce_sum_(at::Tensor& t) override { c_.allreduce_sum_(t); }

 private:
  cddp::Communicator& c_;
};

fs::path scratch() {
  std::string tmpl = (fs::temp_directory_path() / "cddp_powersgd_torch_XXXXXX").string();
  const char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  return made ? fs::path(made) : fs::path();
}

TEST(PowerSgdVsTorch, HookAndPluginAgreeOnPQAndTheGradientOverFiveSteps) {
  const auto probe = run(python() +
                         " -c \"import torch, torch.distributed as d; "
                         "from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook; "
                         "assert d.is_available() and d.is_gloo_available(), 'no gloo'; print(torch.__version__)\"");
  if (probe.first != 0)
    GTEST_SKIP() << python() << " cannot run PyTorch's powerSGD_hook over Gloo, so there is nothing to compare with: "
                 << probe.second;

  const fs::path dir = scratch();
  ASSERT_FALSE(dir.empty());
  int64_t max_steps = 0;
  for (const auto& c : kConfigs) max_steps = std::max(max_steps, c.steps());
  {
    std::ofstream m(dir / "manifest.txt");
    m << "world " << kWorld << "\n";
    for (size_t i = 0; i < kShapes.size(); ++i) {
      m << "param " << i;
      for (int64_t d : kShapes[i]) m << " " << d;
      m << "\n";
    }
    for (const auto& c : kConfigs) {
      m << "config " << c.name << " " << c.rank << " " << c.start_iter << " " << (c.warm_start ? 1 : 0) << " "
        << c.epsilon << " " << c.steps() << " 2\n";
      for (int64_t s = 1; s <= c.steps(); ++s)
        for (size_t i = 0; i < kShapes.size(); ++i)
          m << "seed " << c.name << " " << s << " " << i << " " << cddp::powersgd::q_seed(kSeed, int64_t(i), s) << "\n";
    }
  }
  // grads[step][rank][param]
  std::vector<std::vector<std::vector<at::Tensor>>> grads(max_steps + 1);
  at::Generator gen = at::detail::createCPUGenerator(2019);
  for (int64_t s = 1; s <= max_steps; ++s) {
    grads[s].resize(kWorld);
    for (int r = 0; r < kWorld; ++r)
      for (size_t i = 0; i < kShapes.size(); ++i) {
        // A decaying spectrum plus noise, so that low rank has something to find.
        const auto& sh = kShapes[i];
        const int64_t n = sh[0], m = numel_of(sh) / n;
        at::Tensor low = at::mm(at::randn({n, 3}, gen) * at::tensor({3.0f, 2.0f, 1.0f}), at::randn({3, m}, gen));
        grads[s][r].push_back((low + 0.3 * at::randn({n, m}, gen)).reshape(sh));
        write_bin(dir / ("grad_r" + std::to_string(r) + "_s" + std::to_string(s) + "_p" + std::to_string(i) + ".bin"),
                  grads[s][r].back());
      }
  }

  const auto ref = run(python() + " " + CDDP_TEST_SOURCE_DIR "/tests/plugins/powersgd_torch_reference.py " +
                       dir.string());
  ASSERT_EQ(ref.first, 0) << ref.second;
  std::printf("%s", ref.second.c_str());

  cddp::PluginLoader loader = cddp::testing::build_tree_loader();
  for (const auto& c : kConfigs) {
    auto codec = loader.create("powersgd", {{"rank", c.rank},
                                            {"start_iter", c.start_iter},
                                            {"warm_start", c.warm_start},
                                            {"orthogonalization_epsilon", c.epsilon},
                                            {"keep_p", true}});
    // ours[step][rank][param] = {G, P, Q}
    std::vector<std::vector<std::vector<std::array<at::Tensor, 3>>>> ours(
        c.steps() + 1, std::vector<std::vector<std::array<at::Tensor, 3>>>(kWorld));
    on_ranks(kWorld, [&](cddp::Communicator& comm, int r) {
      // One intra-op thread a rank-thread: a BLAS built on OpenMP, entered from two threads at
      // once with more than one thread each, hung here (Debian 13's OpenBLAS); single-threaded
      // in each caller is its safe mode, as the host's coalesced rounds use it.
      at::set_num_threads(1);
      Collective coll(comm);
      std::vector<cddp::PluginState> state(kShapes.size());
      std::vector<at::Tensor> e;
      for (size_t i = 0; i < kShapes.size(); ++i) {
        for (const auto& spec : codec->state_specs(kShapes[i], at::kFloat))
          state[i][spec.name] = at::zeros(spec.shape, spec.dtype);
        e.push_back(at::zeros(kShapes[i]));
      }
      for (int64_t s = 1; s <= c.steps(); ++s)
        for (size_t i = 0; i < kShapes.size(); ++i) {
          const at::Tensor acc = grads[s][r][i] + e[i];  // the host: acc = g + e
          at::Tensor avg = at::empty({acc.numel()}), approx = at::empty({acc.numel()});
          cddp::CompressContext ctx;
          ctx.step = s;
          ctx.param_index = int64_t(i);
          ctx.param_name = "p" + std::to_string(i);
          ctx.seed = kSeed;
          ctx.world_size = kWorld;
          codec->run_rounds(acc, state[i], coll, ctx, avg, approx);
          e[i] = acc - approx.view(acc.sizes());  // the host: e = acc − approx
          ours[s][r].push_back({avg, state[i].at("p").clone(), state[i].at("q").clone()});
        }
    });

    std::printf("%-12s step  max rel diff G      P          Q\n", c.name.c_str());
    for (int64_t s = 1; s <= c.steps(); ++s) {
      const bool compressed = s > c.start_iter;
      double worst[3] = {0, 0, 0};
      for (int r = 0; r < kWorld; ++r)
        for (size_t i = 0; i < kShapes.size(); ++i) {
          const std::string stem = "out_" + c.name + "_r" + std::to_string(r) + "_s" + std::to_string(s) + "_p" +
                                   std::to_string(i) + "_";
          const auto plan = cddp::powersgd::plan_for(kShapes[i], c.rank, 2.0);
          ASSERT_TRUE(plan.compress);
          const int64_t sizes[3] = {numel_of(kShapes[i]), plan.rows * plan.rank, plan.cols * plan.rank};
          for (int k = 0; k < (compressed ? 3 : 1); ++k) {
            const at::Tensor theirs = read_bin(dir / (stem + "GPQ"[k] + ".bin"), sizes[k]);
            const double d = rel_diff(ours[s][r][i][k], theirs);
            worst[k] = std::max(worst[k], d);
            if (k == 0 && compressed)  // not vacuous: the hook did compress (low rank is not the mean)
              EXPECT_GT(rel_diff(theirs, (grads[s][0][i] + grads[s][1][i]) / 2), 1e-2) << c.name << " step " << s;
            EXPECT_LE(d, kTolerance) << c.name << " step " << s << " rank " << r << " param " << i << " "
                                     << "GPQ"[k];
          }
        }
      if (compressed)
        std::printf("%-12s %4lld  %s  %.3e  %.3e  %.3e\n", c.name.c_str(), static_cast<long long>(s), "compressed",
                    worst[0], worst[1], worst[2]);
      else
        std::printf("%-12s %4lld  %s  %.3e\n", c.name.c_str(), static_cast<long long>(s), "dense     ", worst[0]);
    }
  }
  std::error_code ec;
  if (!HasFailure()) fs::remove_all(dir, ec);
  else std::printf("kept %s\n", dir.string().c_str());
}

}  // namespace
