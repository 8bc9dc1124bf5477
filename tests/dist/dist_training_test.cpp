// dist_training_test.cpp — multi-process training over C10dCommunicator (Gloo on 127.0.0.1),
// checked against single-process references written out plainly below:
//   - top-k (error feedback) and random-k at W = 2 and 4: after 20 steps every rank holds
//     bitwise identical parameters, equal (1e-6 relative) to W simulated workers;
//   - dense (no compressor): equal (1e-5) to plain SGD on the concatenated batch;
//   - StepStats.bytes_received within 5% of (W−1)·k·(value + index bytes);
//   - a non-finite gradient on one rank: all ranks skip, or all ranks error;
//   - a configuration mismatch: every rank stops, naming the differing field;
//   - overlap = true against overlap = false over Gloo at W = 2 and 4 for topk, randomk and qsgd,
//     with dense-routed biases and a non-finite step: the same bits.
// It will not test failures of peers (dist_failure_test) or the launcher (dist_launcher_test).
#include "dist_common.h"
#include "dist_launch.h"

#include <cddp/plugin_loader.h>

#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <cmath>
#include <map>
#include <regex>

namespace cddp::disttest {
namespace {

constexpr int kSteps = 20;
constexpr double kLr = 0.1;

std::vector<at::Tensor> load_params(const std::filesystem::path& dir, int rank) {
  std::vector<at::Tensor> p;
  torch::load(p, (dir / ("params_rank" + std::to_string(rank) + ".pt")).string());
  return p;
}

double max_rel_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    double scale = std::max(b[i].abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>() / scale);
  }
  return worst;
}

// W simulated workers, each with its own data and residual, exchanging exactly what the
// multi-process run exchanges: per parameter, every rank compresses acc = g + e, keeps
// e = acc − D(C(acc)), and all ranks apply the mean over ranks of D(C(acc)), summed in rank
// order. Momentum "global": on that mean, as torch::optim::SGD does. Momentum "dgc" (Lin et al.
// 2018): each worker keeps a velocity u = m·u + g, compresses acc = u + e, and zeroes u where it
// sent; the mean is applied as it is.
std::vector<at::Tensor> compressed_reference(const std::string& name, double ratio, int W, double momentum,
                                             bool dgc) {
  at::set_num_threads(1);
  PluginLoader loader(PluginSearchPath::standard({CDDP_TEST_PLUGIN_DIR}, nullptr));
  std::shared_ptr<Compressor> comp = loader.create(name, {{"ratio", ratio}});
  auto named = make_params(7);  // rank 0's initial values: the ones broadcast to everyone
  std::vector<at::Tensor> p;
  std::vector<std::string> names;
  for (auto& [n, t] : named) {
    p.push_back(t.detach().clone());
    names.push_back(n);
  }
  const size_t P = p.size();
  std::vector<std::vector<at::Tensor>> residual(W);
  for (auto& e : residual)
    for (auto& t : p) e.push_back(at::zeros_like(t));
  std::vector<at::Tensor> buf(P);
  std::vector<std::vector<at::Tensor>> velocity(W, std::vector<at::Tensor>(P));
  for (int64_t step = 1; step <= kSteps; ++step) {
    std::vector<at::Tensor> mean(P);
    for (size_t i = 0; i < P; ++i) mean[i] = at::zeros({p[i].numel()});
    for (int r = 0; r < W; ++r) {
      std::vector<at::Tensor> g = grads_of(p, make_batch(r, step));
      for (size_t i = 0; i < P; ++i) {
        CompressContext ctx;
        ctx.step = step;
        ctx.param_index = static_cast<int64_t>(i);
        ctx.param_name = names[i];
        ctx.seed = 42;
        ctx.ratio = ratio;
        at::Tensor source = g[i];
        if (dgc && momentum != 0) {
          at::Tensor& u = velocity[r][i];
          u = u.defined() ? u.mul_(momentum).add_(g[i]) : g[i].clone();
          source = u;
        }
        at::Tensor acc = source + residual[r][i];
        Compressed sent = comp->compress(acc, ctx);
        residual[r][i] = acc - comp->decompress(sent);
        if (dgc && momentum != 0) velocity[r][i].view(-1).index_fill_(0, sent.indices.to(at::kLong), 0);
        comp->decompress_add_(sent, mean[i]);
      }
    }
    for (size_t i = 0; i < P; ++i) {
      at::Tensor d = mean[i].div_(W).view(p[i].sizes());
      if (momentum != 0 && !dgc) {
        buf[i] = buf[i].defined() ? buf[i].mul_(momentum).add_(d) : d.clone();
        d = buf[i];
      }
      p[i].add_(d, -kLr);
    }
  }
  return p;
}

// Plain SGD (LibTorch's own) on the W ranks' batches concatenated into one.
std::vector<at::Tensor> dense_reference(int W, double momentum) {
  at::set_num_threads(1);
  std::vector<at::Tensor> p = tensors_of(make_params(7));
  torch::optim::SGD sgd(p, torch::optim::SGDOptions(kLr).momentum(momentum));
  for (int64_t step = 1; step <= kSteps; ++step) {
    std::vector<at::Tensor> xs, ys;
    for (int r = 0; r < W; ++r) {
      Batch b = make_batch(r, step);
      xs.push_back(b.x);
      ys.push_back(b.y);
    }
    sgd.zero_grad();
    loss_of(p, Batch{at::cat(xs), at::cat(ys)}).backward();
    sgd.step();
  }
  std::vector<at::Tensor> out;
  for (auto& t : p) out.push_back(t.detach().clone());
  return out;
}

struct Case {
  std::string compressor;  // topk, randomk, none
  int world;
  double momentum;
  std::string momentum_mode = "global";  // "dgc": the sparse route's coalesced average and sparse update
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.compressor + "_W" + std::to_string(info.param.world) +
         (info.param.momentum_mode == "dgc" ? "_dgc" : "");
}

class MultiProcessTraining : public ::testing::TestWithParam<Case> {};

TEST_P(MultiProcessTraining, RanksBitwiseIdenticalAndMatchReference) {
  const Case c = GetParam();
  const auto dir = scratch_dir("train_" + c.compressor + "_" + std::to_string(c.world) + "_" + c.momentum_mode);
  JobRun run = run_workers(c.world, {"train", "--compressor", c.compressor, "--ratio", "0.01", "--steps",
                                  std::to_string(kSteps), "--lr", std::to_string(kLr), "--momentum",
                                  std::to_string(c.momentum), "--momentum-mode", c.momentum_mode, "--out",
                                  dir.string(), "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
  ASSERT_EQ(run.code, 0) << run.all();
  const std::string expected_route = c.compressor == "topk"      ? "sparse-allgather"
                                     : c.compressor == "randomk" ? "shared-indices-allreduce"
                                                                 : "dense-allreduce";
  for (int r = 0; r < c.world; ++r) {
    EXPECT_EQ(run.count(r, "STEP "), kSteps) << run.all();
    EXPECT_EQ(run.count(r, "ROUTE "), 4) << run.all();
    for (const char* p : {"w1", "b1", "w2", "b2"})
      EXPECT_NE(run.text(r).find(std::string("ROUTE ") + p + " " + expected_route), std::string::npos)
          << "rank " << r << " " << p << "\n" << run.all();
    EXPECT_NE(run.text(r).find("BACKEND gloo"), std::string::npos) << run.all();
  }

  // 1. Bitwise identical on every rank.
  std::vector<at::Tensor> p0 = load_params(dir, 0);
  ASSERT_EQ(p0.size(), 4u);
  for (int r = 1; r < c.world; ++r) {
    std::vector<at::Tensor> pr = load_params(dir, r);
    ASSERT_EQ(pr.size(), p0.size());
    for (size_t i = 0; i < p0.size(); ++i) EXPECT_TRUE(at::equal(p0[i], pr[i])) << "rank " << r << " tensor " << i;
  }
  // Training moved the parameters away from rank 0's initial values.
  EXPECT_FALSE(at::equal(p0[0], tensors_of(make_params(7))[0].detach()));

  // 2. Equal to the single-process reference.
  if (c.compressor == "none") {
    const double diff = max_rel_diff(p0, dense_reference(c.world, c.momentum));
    EXPECT_LE(diff, 1e-5) << "dense W=" << c.world;
    std::printf("dense W=%d: max relative difference to SGD on the concatenated batch %.3g\n", c.world, diff);
  } else {
    const double diff =
        max_rel_diff(p0, compressed_reference(c.compressor, 0.01, c.world, c.momentum, c.momentum_mode == "dgc"));
    EXPECT_LE(diff, 1e-6) << c.compressor << " W=" << c.world << " " << c.momentum_mode;
    std::printf("%s W=%d %s: max relative difference to the simulated reference %.3g\n", c.compressor.c_str(),
                c.world, c.momentum_mode.c_str(), diff);
  }
}

INSTANTIATE_TEST_SUITE_P(Dist, MultiProcessTraining,
                         ::testing::Values(Case{"topk", 2, 0.9}, Case{"topk", 4, 0.9}, Case{"topk", 2, 0.9, "dgc"},
                                           Case{"topk", 4, 0.9, "dgc"}, Case{"randomk", 2, 0.0},
                                           Case{"randomk", 4, 0.0}, Case{"none", 2, 0.9}, Case{"none", 4, 0.9}),
                         case_name);

// The exchange overlapping backward (3 buckets: b2 | w2 | b1 w1) gives the serial path's bits,
// over real Gloo: at W = 4 its ring allreduce sums an entry in an order that depends on the
// entry's place in the flattened buffer, which is why the dense (b1, b2 under min_numel) and
// shared-indices (randomk) routes are still one flattened call at step(). Rank 1 has a NaN at
// step 7 (planted during backward, after the first buckets left): every rank skips it.
class MultiProcessOverlap : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(MultiProcessOverlap, SameBitsAsSerialOverGloo) {
  const auto [compressor, world] = GetParam();
  std::vector<std::vector<at::Tensor>> params(2);
  for (int overlap : {0, 1}) {
    const auto dir = scratch_dir("overlap_" + compressor + "_" + std::to_string(world) + "_" + std::to_string(overlap));
    JobRun run = run_workers(world, {"train", "--compressor", compressor, "--ratio", "0.1", "--steps", "20",
                                     "--momentum", "0.9", "--momentum-mode", "dgc", "--min-numel", "100", "--overlap",
                                     std::to_string(overlap), "--bucket-kb", "2", "--first-bucket-kb", "0.1",
                                     "--nonfinite", "skip_step", "--nan-rank", "1", "--nan-step", "7", "--out",
                                     dir.string(), "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
    ASSERT_EQ(run.code, 0) << run.all();
    for (int r = 0; r < world; ++r) {
      EXPECT_NE(run.text(r).find("STEP 7 skipped=1 count=6"), std::string::npos) << run.all();
      EXPECT_NE(run.text(r).find("STEP 20 skipped=0 count=19"), std::string::npos) << run.all();
      EXPECT_NE(run.text(r).find("ROUTE b1 dense-allreduce"), std::string::npos) << run.all();
    }
    params[size_t(overlap)] = load_params(dir, world - 1);
    for (int r = 0; r < world - 1; ++r) {
      const std::vector<at::Tensor> pr = load_params(dir, r);
      for (size_t i = 0; i < pr.size(); ++i) EXPECT_TRUE(at::equal(pr[i], params[size_t(overlap)][i])) << "rank " << r;
    }
  }
  ASSERT_EQ(params[0].size(), 4u);
  ASSERT_EQ(params[1].size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_TRUE(at::equal(params[0][i], params[1][i]))
        << compressor << " W=" << world << " tensor " << i << ": max |diff| "
        << (params[0][i] - params[1][i]).abs().max().item<double>();
  EXPECT_FALSE(at::equal(params[1][0], tensors_of(make_params(7))[0].detach()));
}

INSTANTIATE_TEST_SUITE_P(Dist, MultiProcessOverlap,
                         ::testing::Combine(::testing::Values("topk", "randomk", "qsgd"), ::testing::Values(2, 4)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_W" + std::to_string(std::get<1>(info.param));
                         });

// The sparse allreduce per bucket: each tensor's mean and returned entries depend on that tensor
// alone, so the overlapped step gives the serial bits, with fp32 and bf16 values, at W = 3 (not a
// power of two) and 4.
TEST(MultiProcessOverlap, SparseAllreduceGivesTheSerialBits) {
  for (auto [world, values] : {std::pair<int, std::string>{3, "fp32"}, {4, "bf16"}}) {
    std::vector<std::vector<at::Tensor>> params(2);
    for (int overlap : {0, 1}) {
      const auto dir = scratch_dir("overlap_sar_" + std::to_string(world) + values + std::to_string(overlap));
      JobRun run = run_workers(world, {"train", "--compressor", "topk", "--ratio", "0.1", "--steps", "20",
                                       "--momentum", "0.9", "--momentum-mode", "dgc", "--min-numel", "100",
                                       "--exchange", "sparse_allreduce", "--value-dtype", values, "--overlap",
                                       std::to_string(overlap), "--bucket-kb", "2", "--first-bucket-kb", "0.1",
                                       "--out", dir.string(), "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
      ASSERT_EQ(run.code, 0) << run.all();
      params[size_t(overlap)] = load_params(dir, world - 1);
      for (int r = 0; r < world - 1; ++r) {
        const std::vector<at::Tensor> pr = load_params(dir, r);
        for (size_t i = 0; i < pr.size(); ++i) EXPECT_TRUE(at::equal(pr[i], params[size_t(overlap)][i])) << "rank " << r;
      }
    }
    ASSERT_EQ(params[1].size(), 4u);
    for (size_t i = 0; i < 4; ++i)
      EXPECT_TRUE(at::equal(params[0][i], params[1][i])) << "W=" << world << " " << values << " tensor " << i;
    EXPECT_FALSE(at::equal(params[1][0], tensors_of(make_params(7))[0].detach()));
  }
}

// Exchange "auto" with overlap: the bucket job makes the choice (not a silent allgather), the
// same one here as the serial step makes (the sparse tensors all share one bucket).
TEST(MultiProcessOverlap, ExchangeAutoChoosesInTheBucketJob) {
  const int world = 4;
  std::vector<std::string> choice(2);
  std::vector<std::vector<at::Tensor>> params(2);
  for (int overlap : {0, 1}) {
    const auto dir = scratch_dir("overlap_auto_" + std::to_string(overlap));
    JobRun run = run_workers(world, {"train", "--compressor", "topk", "--ratio", "0.1", "--steps", "6", "--momentum",
                                     "0.9", "--momentum-mode", "dgc", "--min-numel", "100", "--exchange", "auto",
                                     "--overlap", std::to_string(overlap), "--out", dir.string(), "--plugin-dir",
                                     CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
    ASSERT_EQ(run.code, 0) << run.all();
    std::smatch m;
    const std::string text = run.text(0);
    ASSERT_TRUE(std::regex_search(text, m, std::regex("EXCHANGE exchange \"auto\" chose (\\w+)"))) << run.all();
    choice[size_t(overlap)] = m[1];
    params[size_t(overlap)] = load_params(dir, 0);
  }
  EXPECT_EQ(choice[0], choice[1]);
  for (size_t i = 0; i < params[0].size(); ++i) EXPECT_TRUE(at::equal(params[0][i], params[1][i])) << "tensor " << i;
}

// PowerSGD (a rounds plugin) in real processes over Gloo at W = 4, w1 and w2 in different
// buckets: the rounds of both are coalesced into one allreduce a round on the serial path, and
// Gloo's ring sums an entry in an order that depends on where it sits in the buffer, so the
// overlapped step must run them at step(), over every bucket's tensors, to give the same bits.
TEST(MultiProcessOverlap, PowerSgdRoundsGiveTheSerialBitsAtW4) {
  const int world = 4;
  std::vector<std::vector<at::Tensor>> params(2);
  for (int overlap : {0, 1}) {
    const auto dir = scratch_dir("overlap_powersgd_" + std::to_string(overlap));
    JobRun run = run_workers(world, {"train", "--compressor", "powersgd", "--params", "rank=2,start_iter=2",
                                     "--steps", "12", "--momentum", "0.9", "--overlap", std::to_string(overlap),
                                     "--bucket-kb", "2", "--first-bucket-kb", "0.1", "--out", dir.string(),
                                     "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
    ASSERT_EQ(run.code, 0) << run.all();
    params[size_t(overlap)] = load_params(dir, 0);
  }
  ASSERT_EQ(params[0].size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_TRUE(at::equal(params[0][i], params[1][i]))
        << "tensor " << i << ": max |diff| " << (params[0][i] - params[1][i]).abs().max().item<double>();
}

// Received bytes per rank against (W−1)·(k·value bytes + index bytes): plain int32 indices take
// 4 bytes each; Block16 (the default) 2 bytes each plus 4 bytes for each of the tensor's
// ceil(numel / 65536) blocks.
TEST(MultiProcessBytes, ReceivedBytesMatchFormula) {
  const int64_t numel = 1000000, k = 10000;  // ratio 0.01
  for (const std::string coding : {"block16", "plain"}) {
    const double index_bytes = coding == "plain" ? 4.0 * k : 2.0 * k + 4.0 * 16;  // 1e6 entries: 16 blocks
    for (int W : {2, 4}) {
      JobRun run = run_workers(W, {"bytes", "--numel", std::to_string(numel), "--ratio", "0.01", "--index-coding",
                                coding, "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
      ASSERT_EQ(run.code, 0) << run.all();
      const double expected = double(W - 1) * (4.0 * k + index_bytes);  // fp32 values
      for (int r = 0; r < W; ++r) {
        std::smatch m;
        const std::string text = run.text(r);
        ASSERT_TRUE(std::regex_search(
            text, m, std::regex("BYTES received=(\\d+) sent=(\\d+) payload=(\\d+) k=(\\d+) route=(\\S+)")))
            << run.all();
        const double received = std::stod(m[1]);
        EXPECT_EQ(std::stoll(m[4]), k);
        EXPECT_EQ(m[5].str(), "sparse-allgather");
        EXPECT_NEAR(received / expected, 1.0, 0.05)
            << coding << " W=" << W << " rank " << r << ": " << received << " vs " << expected;
        std::printf("%s W=%d rank %d: bytes_received %.0f, formula (W-1)*(4k + index bytes) = %.0f (ratio %.4f)\n",
                    coding.c_str(), W, r, received, expected, received / expected);
      }
    }
  }
}

// exchange "sparse_allreduce" over Gloo's alltoall (C10dCommunicator), W = 2, 3, 4, and with
// bf16 values: every rank ends with the same bits, and training moved the parameters.
TEST(MultiProcessSparseAllreduce, RanksBitwiseIdentical) {
  for (auto [W, values] : {std::pair<int, std::string>{2, "fp32"}, {3, "fp32"}, {4, "fp32"}, {3, "bf16"}}) {
    const auto dir = scratch_dir("sparse_allreduce_" + std::to_string(W) + values);
    JobRun run = run_workers(W, {"train", "--compressor", "topk", "--ratio", "0.05", "--steps", std::to_string(kSteps),
                                 "--lr", std::to_string(kLr), "--momentum", "0.9", "--momentum-mode", "dgc",
                                 "--exchange", "sparse_allreduce", "--value-dtype", values, "--out", dir.string(),
                                 "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"});
    ASSERT_EQ(run.code, 0) << run.all();
    std::vector<at::Tensor> p0 = load_params(dir, 0);
    ASSERT_EQ(p0.size(), 4u);
    EXPECT_FALSE(at::equal(p0[0], tensors_of(make_params(7))[0].detach()));
    for (int r = 1; r < W; ++r) {
      std::vector<at::Tensor> pr = load_params(dir, r);
      for (size_t i = 0; i < p0.size(); ++i)
        EXPECT_TRUE(at::equal(p0[i], pr[i])) << "W=" << W << " " << values << " rank " << r << " tensor " << i;
    }
  }
}

// Bytes received per rank with the sparse allreduce, against its formula for evenly spread
// selections, s = b = ceil(k/W) entries of fp32 values with Block16-coded offsets in regions of
// R = ceil(numel/W) entries (off(n) = 4·ceil(R/65536) + 2n):
//   (W−1)·(off(s) + 4s) + (W−1)·(8 + off(b) + 4b) + 16·(W−1),
// and against W: at most 1.9× from W = 2 to W = 8 for the same k (about 1.75× by the formula),
// where the allgather grows 7×.
TEST(MultiProcessSparseAllreduce, ReceivedBytesStayFlatWithW) {
  const int64_t numel = 1000000, k = 10000;
  std::map<int, double> mean_received;
  for (int W : {2, 4, 8}) {
    JobRun run = run_workers(W, {"bytes", "--numel", std::to_string(numel), "--ratio", "0.01", "--exchange",
                                 "sparse_allreduce", "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "60"});
    ASSERT_EQ(run.code, 0) << run.all();
    const double b = std::ceil(double(k) / W), blocks = std::ceil(std::ceil(double(numel) / W) / 65536);
    const double off = 4 * blocks + 2 * b;
    const double expected = (W - 1) * (off + 4 * b) + (W - 1) * (8 + off + 4 * b) + 16.0 * (W - 1);
    double sum = 0;
    for (int r = 0; r < W; ++r) {
      std::smatch m;
      const std::string text = run.text(r);
      ASSERT_TRUE(std::regex_search(text, m, std::regex("BYTES received=(\\d+) sent=(\\d+)"))) << run.all();
      const double received = std::stod(m[1]);
      EXPECT_NEAR(received / expected, 1.0, 0.10) << "W=" << W << " rank " << r << ": " << received << " vs " << expected;
      sum += received;
    }
    mean_received[W] = sum / W;
    std::printf("sparse_allreduce W=%d: mean bytes_received %.0f, formula %.0f\n", W, sum / W, expected);
  }
  EXPECT_LE(mean_received[8] / mean_received[2], 1.9) << mean_received[2] << " -> " << mean_received[8];
}

TEST(MultiProcessNonFinite, AllRanksSkipTogether) {
  const auto dir = scratch_dir("nonfinite_skip");
  JobRun run = run_workers(2, {"train", "--compressor", "topk", "--steps", "6", "--nan-rank", "1", "--nan-step", "3",
                            "--nonfinite", "skip_step", "--out", dir.string(), "--plugin-dir", CDDP_TEST_PLUGIN_DIR,
                            "--timeout", "30"});
  ASSERT_EQ(run.code, 0) << run.all();
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(run.text(r).find("STEP 3 skipped=1 count=2"), std::string::npos) << run.all();
    EXPECT_NE(run.text(r).find("STEP 6 skipped=0 count=5"), std::string::npos) << run.all();
    EXPECT_EQ(run.count(r, "STEP 4 skipped=0"), 1) << run.all();
  }
  auto p0 = load_params(dir, 0), p1 = load_params(dir, 1);
  for (size_t i = 0; i < p0.size(); ++i) {
    EXPECT_TRUE(at::equal(p0[i], p1[i])) << "tensor " << i;
    EXPECT_TRUE(at::isfinite(p0[i]).all().item<bool>());
  }
}

TEST(MultiProcessNonFinite, AllRanksErrorTogether) {
  JobRun run = run_workers(2, {"train", "--compressor", "topk", "--steps", "6", "--nan-rank", "1", "--nan-step", "3",
                            "--nonfinite", "error", "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"},
                        [](LaunchOptions& o) { o.terminate_on_failure = false; });
  EXPECT_NE(run.code, 0) << run.all();
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(run.report.workers[r].exited && run.report.workers[r].code == 1) << run.all();
    EXPECT_EQ(run.count(r, "STEP 3"), 0) << run.all();
    EXPECT_EQ(run.count(r, "STEP 2 skipped=0"), 1) << run.all();
  }
  EXPECT_NE(run.text(1).find("non-finite gradient (NaN or Inf) in parameter 'w1' at step 3 on rank 1"),
            std::string::npos)
      << run.all();
  EXPECT_NE(run.text(0).find("non-finite gradient (NaN or Inf) on another rank at step 3"), std::string::npos)
      << run.all();
}

TEST(MultiProcessConfig, MismatchStopsEveryRankNamingTheField) {
  JobRun run = run_workers(2, {"train", "--compressor", "topk", "--ratio", "0.01", "--ratio-rank1", "0.02", "--steps",
                            "3", "--plugin-dir", CDDP_TEST_PLUGIN_DIR, "--timeout", "30"},
                        [](LaunchOptions& o) { o.terminate_on_failure = false; });
  EXPECT_NE(run.code, 0) << run.all();
  for (int r = 0; r < 2; ++r) {
    const std::string t = run.text(r);
    EXPECT_EQ(run.report.workers[r].code, 1) << run.all();
    EXPECT_NE(t.find("configuration differs between ranks"), std::string::npos) << run.all();
    EXPECT_NE(t.find("compressor.ratio: rank 0 = '0.010000'; rank 1 = '0.020000'"), std::string::npos) << run.all();
    EXPECT_EQ(t.find("  lr:"), std::string::npos) << "only differing fields are listed\n" << run.all();
    EXPECT_EQ(run.count(r, "STEP "), 0) << run.all();
  }
}

}  // namespace
}  // namespace cddp::disttest
