// sparse_allreduce_test.cpp — SparseAlgorithm::SparseAllreduce (core/src/exchange/sparse_allreduce.h)
// and 16-bit ValueWire through GradientExchange, over W in-process ranks (ThreadCommunicator):
// bitwise identical ranks, exact conservation (W·mean + Σ returned == Σ sent, on values whose
// sums are exact), empty and one-entry regions, W = 3, agreement with the allgather when the
// re-selection keeps everything, the received bytes against W, fp16 overflow refused, and
// CompressedSGD with exchange "sparse_allreduce" / "auto" and value_dtype "bf16".
// It will not time anything (tools/bench/bench_exchange does).
#include <cddp/compressed_sgd.h>
#include <cddp/gradient_exchange.h>

#include "test_plugins.h"
#include "thread_communicator.h"
#include "bitwise_equal.h"
#include "hand_selections.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using cddp::Compressed;
using cddp::ExchangeWire;
using cddp::GradientExchange;
using cddp::SparseAlgorithm;
using cddp::SparseAverage;
using cddp::SparseSlot;
using cddp::StepStats;
using cddp::ValueWire;
using cddp::testing::bitwise_equal;
using cddp::testing::on_ranks;
using cddp::testing::PlainCodec;
using cddp::testing::selection;

// A dense [numel] double tensor from a list (repeats add up).
at::Tensor dense_of(const SparseAverage& a, int64_t numel) {
  at::Tensor d = at::zeros({numel}, at::kDouble);
  if (a.count() > 0) d.index_add_(0, a.indices.to(at::kLong), a.values.to(at::kDouble));
  return d;
}
at::Tensor dense_of(const Compressed& c) {
  at::Tensor d = at::zeros({c.numel}, at::kDouble);
  if (c.count() > 0) d.index_add_(0, c.indices.to(at::kLong), c.values.to(at::kDouble));
  return d;
}

// k distinct random indices of [0, numel) with values that are small integers (so every fp32
// sum of a few of them is exact), scaled by `scale`.
Compressed random_selection(int64_t numel, int64_t k, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::set<int64_t> picked;
  while (static_cast<int64_t>(picked.size()) < k) picked.insert(std::uniform_int_distribution<int64_t>(0, numel - 1)(gen));
  std::vector<int64_t> idx(picked.begin(), picked.end());
  std::shuffle(idx.begin(), idx.end(), gen);  // the exchange must not rely on sorted input
  std::vector<float> vals;
  for (size_t j = 0; j < idx.size(); ++j) {
    int v = std::uniform_int_distribution<int>(-4000, 4000)(gen);
    vals.push_back(float(v == 0 ? 1 : v) * scale);
  }
  return selection(idx, vals, numel);
}

struct RankResult {
  SparseAverage mean, returned;
  Compressed sent;
  StepStats stats;
};

// Every rank's result of one sparse exchange of `make(rank)`.
std::vector<RankResult> exchange_all(int W, ExchangeWire wire, const std::function<Compressed(int)>& make) {
  std::vector<RankResult> out(static_cast<size_t>(W));
  PlainCodec codec;
  on_ranks(W, [&](cddp::Communicator& comm, int rank) {
    RankResult& r = out[rank];
    r.sent = make(rank);
    GradientExchange ex(comm, wire);
    at::Tensor unused = at::zeros({r.sent.numel});
    std::vector<SparseSlot> slots{{&r.sent, &codec, &unused, nullptr, -1, &r.mean, &r.returned}};
    ex.average_sparse(slots, r.stats);
  });
  return out;
}

ExchangeWire reduced(ValueWire v = ValueWire::Native) {
  ExchangeWire w;
  w.algorithm = SparseAlgorithm::SparseAllreduce;
  w.values = v;
  return w;
}

// Σ sent − Σ returned, the sums the owners kept, is exact in double (every value is a small
// integer times a power of two), and the mean is that sum in fp32 divided by W — the same bits on
// every rank: so W·mean + Σ returned == Σ sent, nothing lost or counted twice.
void expect_identical_and_conserved(const std::vector<RankResult>& res, int64_t numel) {
  const int W = static_cast<int>(res.size());
  at::Tensor sent = at::zeros({numel}, at::kDouble), back = at::zeros({numel}, at::kDouble);
  for (const RankResult& r : res) {
    ASSERT_TRUE(r.mean.valid);
    EXPECT_TRUE(bitwise_equal(r.mean.indices, res[0].mean.indices));
    EXPECT_TRUE(bitwise_equal(r.mean.values, res[0].mean.values));
    sent += dense_of(r.sent);
    back += dense_of(r.returned, numel);
  }
  at::Tensor kept = sent - back;
  EXPECT_TRUE(at::equal(kept.to(at::kFloat).to(at::kDouble), kept)) << "the kept sums are fp32 values";
  at::Tensor expected = kept.to(at::kFloat) / W, mean = dense_of(res[0].mean, numel).to(at::kFloat);
  EXPECT_TRUE(at::equal(mean, expected)) << "max |diff| " << (mean - expected).abs().max().item<float>();
  // The mean's indices are strictly increasing.
  at::Tensor idx = res[0].mean.indices.to(at::kLong);
  if (idx.numel() > 1) EXPECT_TRUE((idx.slice(0, 1) > idx.slice(0, 0, -1)).all().item<bool>());
}

TEST(SparseAllreduce, IdenticalRanksAndExactConservationAtW234) {
  for (int W : {2, 3, 4}) {
    const int64_t numel = 5000, k = 200;
    auto res = exchange_all(W, reduced(), [&](int r) { return random_selection(numel, k, 11 + r, 0.25f); });
    expect_identical_and_conserved(res, numel);
    // The re-selection keeps at most ceil(k/W) per region, and returns the rest.
    EXPECT_LE(res[0].mean.count(), W * ((k + W - 1) / W));
    int64_t returned = 0;
    for (auto& r : res) returned += r.returned.count();
    EXPECT_GT(returned, 0) << "W=" << W << ": random selections overlap little, so some must be dropped";
  }
}

TEST(SparseAllreduce, EmptyAndOneEntryRegionsAtW3) {
  const int64_t numel = 10;  // regions [0,4) [4,7) [7,10)
  auto res = exchange_all(3, reduced(), [&](int r) {
    if (r == 0) return selection({0}, {2.0f}, numel);
    if (r == 1) return selection({}, {}, numel);
    return selection({9}, {-3.0f}, numel);
  });
  expect_identical_and_conserved(res, numel);
  // budget ceil(1/3) = 1: region 0 keeps index 0, region 1 is empty, region 2 keeps index 9.
  EXPECT_EQ(cddp::testing::to_vec(res[0].mean.indices), (std::vector<int64_t>{0, 9}));
  EXPECT_TRUE(at::equal(res[0].mean.values, at::tensor({2.0f / 3, -3.0f / 3})));
  for (auto& r : res) EXPECT_EQ(r.returned.count(), 0);

  auto none = exchange_all(3, reduced(), [&](int) { return selection({}, {}, numel); });
  for (auto& r : none) {
    EXPECT_EQ(r.mean.count(), 0);
    EXPECT_EQ(r.returned.count(), 0);
  }
}

TEST(SparseAllreduce, ReselectionReturnsTheSmallerEntriesToTheirSenders) {
  const int64_t numel = 4;  // W = 2: regions [0,2) [2,4); k = 2, budget 1 per region
  auto res = exchange_all(2, reduced(), [&](int r) {
    return r == 0 ? selection({0, 1}, {5.0f, 1.0f}, numel) : selection({1, 3}, {1.0f, 0.5f}, numel);
  });
  expect_identical_and_conserved(res, numel);
  // Region 0: sums {0: 5, 1: 2} keeps 0; region 1: {3: 0.5} keeps 3.
  EXPECT_EQ(cddp::testing::to_vec(res[0].mean.indices), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(cddp::testing::to_vec(res[0].returned.indices), (std::vector<int64_t>{1}));
  EXPECT_EQ(cddp::testing::to_vec(res[1].returned.indices), (std::vector<int64_t>{1}));
  EXPECT_EQ(res[1].returned.values.item<float>(), 1.0f);
}

TEST(SparseAllreduce, EqualsTheAllgatherBitwiseWhenNothingIsDropped) {
  const int W = 3;
  const int64_t numel = 300;  // 10 indices per region, budget ceil(30/3) = 10: all kept
  auto make = [&](int r) {
    std::vector<int64_t> idx;
    std::vector<float> vals;
    at::Tensor v = at::randn({30}, at::detail::getDefaultCPUGenerator());
    for (int j = 0; j < 30; ++j) idx.push_back(j * 10 + 3), vals.push_back(v[j].item<float>() * (1 + r));
    return selection(idx, vals, numel);
  };
  std::vector<Compressed> fixed;
  for (int r = 0; r < W; ++r) fixed.push_back(make(r));
  auto a = exchange_all(W, reduced(), [&](int r) { return fixed[r]; });
  auto b = exchange_all(W, ExchangeWire{}, [&](int r) { return fixed[r]; });
  for (int r = 0; r < W; ++r) {
    EXPECT_TRUE(bitwise_equal(a[r].mean.values, b[r].mean.values)) << "rank " << r;
    EXPECT_EQ(cddp::testing::to_vec(a[r].mean.indices), cddp::testing::to_vec(b[r].mean.indices));
    EXPECT_EQ(a[r].returned.count(), 0);
  }
}

TEST(SparseAllreduce, ReceivedBytesDoNotGrowWithW) {
  const int64_t numel = 400000, k = 4000;
  std::vector<double> reduced_bytes, gathered_bytes;
  for (int W : {2, 8}) {
    auto a = exchange_all(W, reduced(), [&](int r) { return random_selection(numel, k, 5 + r, 1.0f); });
    auto b = exchange_all(W, ExchangeWire{}, [&](int r) { return random_selection(numel, k, 5 + r, 1.0f); });
    double ra = 0, rb = 0;
    for (int r = 0; r < W; ++r) ra += a[r].stats.bytes_received, rb += b[r].stats.bytes_received;
    reduced_bytes.push_back(ra / W);
    gathered_bytes.push_back(rb / W);
  }
  // Evenly spread selections: (W−1)/W·k·8 + (W−1)·ceil(k/W)·8: 1.0·k·8 at W = 2, 1.75·k·8 at W = 8.
  EXPECT_LT(reduced_bytes[1] / reduced_bytes[0], 1.9) << reduced_bytes[0] << " -> " << reduced_bytes[1];
  EXPECT_NEAR(gathered_bytes[1] / gathered_bytes[0], 7.0, 0.05);
  EXPECT_LT(reduced_bytes[1], gathered_bytes[1] / 2.5);
}

TEST(ValueWire, Bf16RoundingReturnedAndConservedForBothAlgorithms) {
  // Integers up to 4000 need 12 significant bits: bf16 (8) rounds most of them.
  for (SparseAlgorithm alg : {SparseAlgorithm::Allgather, SparseAlgorithm::SparseAllreduce})
    for (int W : {2, 4}) {
      ExchangeWire wire = reduced(ValueWire::BFloat16);
      wire.algorithm = alg;
      const int64_t numel = 3000, k = 150;
      auto res = exchange_all(W, wire, [&](int r) { return random_selection(numel, k, 21 + r, 1.0f); });
      expect_identical_and_conserved(res, numel);
      if (alg == SparseAlgorithm::SparseAllreduce) {  // its sums travel in bf16 too: W·mean is bf16
        at::Tensor s = res[0].mean.values * W;
        EXPECT_TRUE(at::equal(s, s.to(at::kBFloat16).to(at::kFloat)));
      }
      EXPECT_GT(res[0].returned.count(), 0);
      // 2-byte values on the wire: fewer bytes than fp32.
      ExchangeWire fp32 = wire;
      fp32.values = ValueWire::Native;
      auto full = exchange_all(W, fp32, [&](int r) { return random_selection(numel, k, 21 + r, 1.0f); });
      EXPECT_LT(res[0].stats.bytes_received, full[0].stats.bytes_received);
    }
}

TEST(ValueWire, Fp16OverflowIsRefusedNotSentAsInf) {
  for (SparseAlgorithm alg : {SparseAlgorithm::Allgather, SparseAlgorithm::SparseAllreduce}) {
    ExchangeWire wire = reduced(ValueWire::Half);
    wire.algorithm = alg;
    std::mutex mu;
    std::vector<std::string> errors;
    PlainCodec codec;
    on_ranks(2, [&](cddp::Communicator& comm, int) {
      Compressed c = selection({1, 2}, {70000.0f, 1.0f}, 8);  // every rank: each throws before any collective
      GradientExchange ex(comm, wire);
      at::Tensor out = at::zeros({8});
      SparseAverage mean, back;
      std::vector<SparseSlot> slots{{&c, &codec, &out, nullptr, -1, &mean, &back}};
      StepStats st;
      std::string e = cddp::testing::error_of([&] { ex.average_sparse(slots, st); });
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(e);
    });
    for (const auto& e : errors) {
      EXPECT_NE(e.find("65504"), std::string::npos) << e;
      EXPECT_NE(e.find("bf16"), std::string::npos) << e;
    }
  }
  // Within range, fp16 arrives finite and conserved.
  auto res = exchange_all(2, reduced(ValueWire::Half), [&](int r) { return random_selection(1000, 50, 3 + r, 1.0f); });
  expect_identical_and_conserved(res, 1000);
}

TEST(SparseAllreduce, RefusesSlotsWithoutReturnedOutput) {
  PlainCodec codec;
  on_ranks(2, [&](cddp::Communicator& comm, int) {
    Compressed c = selection({1}, {1.0f}, 8);
    GradientExchange ex(comm, reduced());
    at::Tensor out = at::zeros({8});
    std::vector<SparseSlot> slots{{&c, &codec, &out}};
    StepStats st;
    EXPECT_NE(cddp::testing::error_of([&] { ex.average_sparse(slots, st); }).find("returned"), std::string::npos);
  });
}

// CompressedSGD end to end: integer gradients (exact sums) and lr 1, momentum 0, top-k. After
// each step Σ_r e_r + W·(p0 − p) == Σ_r Σ_t g_r(t) exactly, ranks identical.
void run_optimizer_conservation(int W, const std::string& exchange, const std::string& value_dtype) {
  auto loader = cddp::testing::build_tree_loader();
  std::mutex loader_mu;  // one compressor per rank: a plugin instance is not shared between threads
  const int64_t n = 2000;
  std::vector<at::Tensor> final_p(static_cast<size_t>(W)), residual(static_cast<size_t>(W)), grads(static_cast<size_t>(W));
  std::vector<std::string> log(static_cast<size_t>(W));
  on_ranks(W, [&](cddp::Communicator& comm, int rank) {
    std::shared_ptr<cddp::Communicator> shared(&comm, [](cddp::Communicator*) {});
    std::shared_ptr<cddp::Compressor> topk;
    {
      std::lock_guard<std::mutex> lock(loader_mu);
      topk = loader.create("topk", {{"ratio", 0.05}});
    }
    at::Tensor p = at::zeros({n});
    cddp::CompressedSGDOptions o(1.0);
    o.compressor(topk).density(0.05).communicator(shared).exchange(exchange).value_dtype(value_dtype);
    cddp::CompressedSGD opt(std::vector<at::Tensor>{p}, o);
    at::Tensor total = at::zeros({n}, at::kDouble);
    for (int step = 0; step < 6; ++step) {
      at::Tensor g;
      {
        static std::mutex gen_mu;  // the default generator is shared by the rank threads
        std::lock_guard<std::mutex> lock(gen_mu);
        at::manual_seed(1000 * rank + step);
        g = at::randint(-2000, 2000, {n}).to(at::kFloat);
      }
      p.mutable_grad() = g;
      total += g.to(at::kDouble);
      opt.step();
    }
    final_p[rank] = p.detach().clone();
    grads[rank] = total;
    auto& state = static_cast<cddp::CompressedSGDParamState&>(*opt.state().begin()->second);
    residual[rank] = state.residual().to(at::kDouble);
    log[rank] = opt.exchange_decision();
  });
  at::Tensor lhs = at::zeros({n}, at::kDouble), rhs = at::zeros({n}, at::kDouble);
  for (int r = 0; r < W; ++r) {
    EXPECT_TRUE(bitwise_equal(final_p[r], final_p[0])) << exchange << " W=" << W << " rank " << r;
    lhs += residual[r];
    rhs += grads[r];
  }
  lhs -= final_p[0].to(at::kDouble) * W;  // p0 = 0, lr 1: p = −Σ means
  EXPECT_TRUE(at::equal(lhs, rhs)) << exchange << "/" << value_dtype << " W=" << W << ": max |diff| "
                                   << (lhs - rhs).abs().max().item<double>();
  if (exchange == "auto") EXPECT_NE(log[0].find("exchange \"auto\" chose"), std::string::npos) << log[0];
}

TEST(SparseAllreduce, CompressedSGDConservesAndKeepsRanksIdentical) {
  for (int W : {2, 4}) {
    run_optimizer_conservation(W, "sparse_allreduce", "fp32");
    run_optimizer_conservation(W, "sparse_allreduce", "bf16");
    run_optimizer_conservation(W, "allgather", "bf16");
    run_optimizer_conservation(W, "auto", "fp32");
  }
}

TEST(SparseAllreduce, CompressedSGDAtW3RanksIdentical) {
  auto loader = cddp::testing::build_tree_loader();
  std::mutex loader_mu;
  std::vector<at::Tensor> out(3);
  on_ranks(3, [&](cddp::Communicator& comm, int rank) {
    std::shared_ptr<cddp::Communicator> shared(&comm, [](cddp::Communicator*) {});
    std::shared_ptr<cddp::Compressor> topk;
    {
      std::lock_guard<std::mutex> lock(loader_mu);
      topk = loader.create("topk", {{"ratio", 0.02}});
    }
    at::Tensor p = at::ones({64, 50});
    cddp::CompressedSGDOptions o(0.1);
    o.compressor(topk).density(0.02).momentum(0.9).communicator(shared).exchange("sparse_allreduce");
    cddp::CompressedSGD opt(std::vector<at::Tensor>{p}, o);
    for (int step = 0; step < 10; ++step) {
      p.mutable_grad() = at::sin(at::arange(p.numel()).to(at::kFloat) * (0.37 + 0.11 * rank + 0.05 * step)).view(p.sizes());
      opt.step();
    }
    out[rank] = p.detach().clone();
  });
  EXPECT_FALSE(at::equal(out[0], at::ones({64, 50})));
  for (int r = 1; r < 3; ++r) EXPECT_TRUE(bitwise_equal(out[r], out[0])) << "rank " << r;
}

TEST(SparseAllreduce, OptionsAreChecked) {
  at::Tensor p = at::zeros({4});
  cddp::CompressedSGDOptions o(0.1);
  EXPECT_NE(cddp::testing::error_of([&] { cddp::CompressedSGD(std::vector<at::Tensor>{p}, cddp::CompressedSGDOptions(o).exchange("ring")); })
                .find("\"allgather\", \"sparse_allreduce\" or \"auto\""),
            std::string::npos);
  EXPECT_NE(cddp::testing::error_of([&] { cddp::CompressedSGD(std::vector<at::Tensor>{p}, cddp::CompressedSGDOptions(o).value_dtype("fp8")); })
                .find("\"fp32\", \"bf16\" or \"fp16\""),
            std::string::npos);
}

}  // namespace
