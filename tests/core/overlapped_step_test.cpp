// overlapped_step_test.cpp — CompressedSGD with overlap = true against the serial step, over
// in-process ranks (ThreadCommunicator): bitwise equal parameters and state over 20 steps at
// W = 2 and 4 for topk (sparse allgather), randomk (shared-indices allreduce), qsgd (gather
// payload) and powersgd (rounds, coalesced across buckets' tensors), with DGC momentum, weight decay and dense-routed biases; gradient accumulation; the
// non-finite decision agreed by every rank; the exchange starting before step(); misuse errors.
// It will not test real processes or a dead peer (tests/dist/dist_failure_test.cpp).
#include <cddp/compressed_sgd.h>

#include "test_plugins.h"
#include "counting_communicator.h"
#include "thread_communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <sstream>
#include <type_traits>
#include <thread>

using cddp::testing::build_tree_loader;
using cddp::testing::error_of;
using cddp::testing::on_ranks;

namespace {

// 24 → 48 → 32 → 5, raw leaf tensors. With the small bucket caps below the six parameters make
// several buckets, so buckets leave during backward while the first layer is still computed.
struct Mlp {
  std::vector<std::pair<std::string, at::Tensor>> params;
  Mlp() {
    auto g = at::make_generator<at::CPUGeneratorImpl>(7);  // its own: the rank threads run at once
    params = {{"fc1.weight", at::randn({48, 24}, g) * 0.2}, {"fc1.bias", at::randn({48}, g) * 0.1},
              {"fc2.weight", at::randn({32, 48}, g) * 0.2}, {"fc2.bias", at::randn({32}, g) * 0.1},
              {"fc3.weight", at::randn({5, 32}, g) * 0.2},  {"fc3.bias", at::randn({5}, g) * 0.1}};
    for (auto& [n, p] : params) p.set_requires_grad(true);
  }
  at::Tensor loss(int rank, int64_t step, int micro = 0) const {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(100000 * (rank + 1) + 100 * step + micro);
    at::Tensor x = at::randn({16, 24}, gen), y = at::randint(0, 5, {16}, gen);
    at::Tensor h = at::relu(at::linear(x, params[0].second, params[1].second));
    h = at::tanh(at::linear(h, params[2].second, params[3].second));
    return at::cross_entropy_loss(at::linear(h, params[4].second, params[5].second), y);
  }
};

// The optimizer state's key for p: LibTorch 1.13 keys by the TensorImpl address as a string,
// 2.x by the address itself (as CompressedSGD::state_for).
template <class Map>
typename Map::key_type state_key(const Map&, const at::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

struct Setup {
  std::string compressor;
  double ratio;
};

cddp::ParamMap params_for(const Setup& s) {
  if (s.compressor == "qsgd") return {};
  // Rank 2 after 2 dense steps: fc1.weight and fc2.weight go low-rank (fc3.weight, 5 × 32, does
  // not pay and goes dense), in different buckets.
  if (s.compressor == "powersgd") return {{"rank", int64_t{2}}, {"start_iter", int64_t{2}}};
  return {{"ratio", s.ratio}};
}

cddp::CompressedSGDOptions options_for(const Setup& s, cddp::PluginLoader& loader, cddp::Communicator& comm,
                                       bool overlap) {
  return cddp::CompressedSGDOptions(0.1)
      .momentum(0.9)
      .weight_decay(1e-4)
      .compressor(loader.create(s.compressor, params_for(s)))
      .compress_1d(false)  // biases on the dense route: the flattened allreduce is in the test too
      .communicator(std::shared_ptr<cddp::Communicator>(&comm, [](cddp::Communicator*) {}))
      .overlap(overlap)
      .first_bucket_cap_mb(0.0005)  // 524 bytes
      .bucket_cap_mb(0.004);        // 4 KiB: fc2.weight (6 KiB) alone, fc1.* together
}

// Every parameter, residual and momentum buffer of every rank after `steps` steps.
struct Outcome {
  std::vector<std::vector<at::Tensor>> per_rank;
  std::vector<int64_t> steps_taken, skipped;
};

Outcome train(const Setup& s, int world, bool overlap, int steps, int micro_batches = 1,
              int nan_rank = -1, int64_t nan_step = -1, const std::string& nonfinite = "skip_step") {
  Outcome out;
  out.per_rank.resize(size_t(world));
  out.steps_taken.resize(size_t(world));
  out.skipped.resize(size_t(world));
  on_ranks(world, [&](cddp::Communicator& comm, int rank) {
    auto loader = build_tree_loader();
    Mlp m;
    cddp::CompressedSGD opt(m.params, options_for(s, loader, comm, overlap).nonfinite(nonfinite));
    if (overlap) EXPECT_GE(opt.overlap_bucket_count(), 3u);
    int64_t step = 0;
    // A tensor hook runs before AccumulateGrad: it plants a NaN in fc1.weight's gradient, the
    // last bucket to leave, after the other buckets have been compressed and sent.
    m.params[0].second.register_hook([&](const at::Tensor& g) {
      return rank == nan_rank && step == nan_step ? g.clone().fill_(NAN) : g;
    });
    for (step = 1; step <= steps; ++step) {
      for (auto& [n, p] : m.params) p.mutable_grad() = at::Tensor();
      for (int micro = 0; micro < micro_batches; ++micro) {
        opt.set_last_micro_batch(micro == micro_batches - 1);
        m.loss(rank, step, micro).backward();
      }
      opt.step();
      out.skipped[size_t(rank)] += opt.last_step_stats().skipped ? 1 : 0;
    }
    for (auto& [n, p] : m.params) {
      out.per_rank[size_t(rank)].push_back(p.detach().clone());
      auto& st = static_cast<cddp::CompressedSGDParamState&>(*opt.state().at(state_key(opt.state(), p)));
      if (st.residual().defined()) out.per_rank[size_t(rank)].push_back(st.residual().clone());
      if (st.momentum_buffer().defined()) out.per_rank[size_t(rank)].push_back(st.momentum_buffer().clone());
    }
    out.steps_taken[size_t(rank)] = opt.step_count();
  });
  return out;
}

void expect_bitwise_equal(const Outcome& serial, const Outcome& overlapped) {
  ASSERT_EQ(serial.per_rank.size(), overlapped.per_rank.size());
  for (size_t r = 0; r < serial.per_rank.size(); ++r) {
    ASSERT_EQ(serial.per_rank[r].size(), overlapped.per_rank[r].size()) << "rank " << r;
    for (size_t i = 0; i < serial.per_rank[r].size(); ++i)
      EXPECT_TRUE(at::equal(serial.per_rank[r][i], overlapped.per_rank[r][i]))
          << "rank " << r << " tensor " << i << ": max |diff| "
          << (serial.per_rank[r][i] - overlapped.per_rank[r][i]).abs().max().item<double>();
    EXPECT_EQ(serial.steps_taken[r], overlapped.steps_taken[r]);
    EXPECT_EQ(serial.skipped[r], overlapped.skipped[r]);
  }
}

class OverlapBitwise : public ::testing::TestWithParam<std::tuple<Setup, int>> {};

TEST_P(OverlapBitwise, SameParametersAndStateAsSerialOver20Steps) {
  const auto [setup, world] = GetParam();
  const Outcome serial = train(setup, world, false, 20);
  const Outcome overlapped = train(setup, world, true, 20);
  expect_bitwise_equal(serial, overlapped);
  // Not a vacuous equality: training moved the parameters, and the ranks agree.
  Mlp start;
  EXPECT_FALSE(at::equal(serial.per_rank[0][0], start.params[0].second.detach()));
  for (size_t r = 1; r < serial.per_rank.size(); ++r)
    EXPECT_TRUE(at::equal(overlapped.per_rank[0][0], overlapped.per_rank[r][0])) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Compressors, OverlapBitwise,
                         ::testing::Combine(::testing::Values(Setup{"topk", 0.1}, Setup{"randomk", 0.1},
                                                              Setup{"qsgd", 0}, Setup{"powersgd", 0}),
                                            ::testing::Values(2, 4)),
                         [](const auto& info) {
                           return std::get<0>(info.param).compressor + "_W" + std::to_string(std::get<1>(info.param));
                         });

TEST(Overlap, GradientAccumulationSendsOnlyTheLastMicroBatch) {
  const Outcome serial = train({"topk", 0.1}, 2, false, 10, /*micro_batches=*/3);
  const Outcome overlapped = train({"topk", 0.1}, 2, true, 10, /*micro_batches=*/3);
  expect_bitwise_equal(serial, overlapped);
}

TEST(Overlap, NonFiniteOnOneRankSkipsTheStepOnEveryRankLikeSerial) {
  // Rank 1 sees a NaN at step 3 in the last bucket; every other bucket has already left.
  for (int world : {2, 4}) {
    const Outcome serial = train({"topk", 0.1}, world, false, 6, 1, /*nan_rank=*/1, /*nan_step=*/3);
    const Outcome overlapped = train({"topk", 0.1}, world, true, 6, 1, 1, 3);
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(overlapped.skipped[size_t(r)], 1) << "rank " << r;
      EXPECT_EQ(overlapped.steps_taken[size_t(r)], 5) << "rank " << r;
    }
    expect_bitwise_equal(serial, overlapped);
  }
}

TEST(Overlap, NonFiniteWithErrorPolicyThrowsOnEveryRankNamingTheParameter) {
  std::vector<std::string> messages(2);
  on_ranks(2, [&](cddp::Communicator& comm, int rank) {
    auto loader = build_tree_loader();
    Mlp m;
    cddp::CompressedSGD opt(m.params, options_for({"topk", 0.1}, loader, comm, true));
    m.params[0].second.register_hook([&](const at::Tensor& g) { return rank == 1 ? g.clone().fill_(INFINITY) : g; });
    m.loss(rank, 1).backward();
    messages[size_t(rank)] = error_of([&] { opt.step(); });
    EXPECT_EQ(opt.step_count(), 0);
  });
  EXPECT_NE(messages[1].find("non-finite gradient (NaN or Inf) in parameter 'fc1.weight' at step 1 on rank 1"),
            std::string::npos)
      << messages[1];
  EXPECT_NE(messages[0].find("non-finite gradient (NaN or Inf) on another rank at step 1"), std::string::npos)
      << messages[0];
}

// Counts collectives, to see them happen before step() is called.
using cddp::testing::CountingCommunicator;

TEST(Overlap, ExchangeStartsDuringBackwardAndOnlyWhenArmed) {
  on_ranks(2, [&](cddp::Communicator& inner, int rank) {
    CountingCommunicator comm(inner);
    auto loader = build_tree_loader();
    Mlp m;
    cddp::CompressedSGD opt(m.params, options_for({"topk", 0.1}, loader, comm, true));
    opt.set_last_micro_batch(false);
    m.loss(rank, 1, 0).backward();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(comm.calls.load(), 0) << "disarmed: the backward must only accumulate";
    opt.set_last_micro_batch(true);
    m.loss(rank, 1, 1).backward();
    // The bucket jobs run on the comm thread; give them up to 10 s to show up before step().
    for (int i = 0; i < 1000 && comm.calls.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_GT(comm.calls.load(), 0) << "no collective before step(): nothing overlapped";
    opt.step();
    EXPECT_EQ(opt.step_count(), 1);
  });
}

TEST(Overlap, TwoArmedBackwardsBeforeAStepAreAClearError) {
  on_ranks(1, [&](cddp::Communicator& comm, int rank) {
    auto loader = build_tree_loader();
    Mlp m;
    cddp::CompressedSGD opt(m.params, options_for({"topk", 0.1}, loader, comm, true));
    m.loss(rank, 1, 0).backward();
    m.loss(rank, 1, 1).backward();  // forgot set_last_micro_batch(false) before the first
    const std::string msg = error_of([&] { opt.step(); });
    EXPECT_NE(msg.find("received its gradient twice before step()"), std::string::npos) << msg;
    EXPECT_NE(msg.find("set_last_micro_batch(false)"), std::string::npos) << msg;
    // The next, correct step works.
    for (auto& [n, p] : m.params) p.mutable_grad() = at::Tensor();
    m.loss(rank, 2).backward();
    opt.step();
    EXPECT_EQ(opt.step_count(), 1);
  });
}

TEST(Overlap, ScopeModelIsRefusedWithTheReason) {
  Mlp m;
  const std::string msg = error_of([&] {
    cddp::CompressedSGD opt(m.params, cddp::CompressedSGDOptions(0.1).overlap(true).scope("model"));
  });
  EXPECT_NE(msg.find("overlap needs scope \"layer\""), std::string::npos) << msg;
  const std::string caps = error_of([&] {
    cddp::CompressedSGD opt(m.params, cddp::CompressedSGDOptions(0.1).overlap(true).bucket_cap_mb(0));
  });
  EXPECT_NE(caps.find("Invalid bucket_cap_mb 0"), std::string::npos) << caps;
}

TEST(Overlap, EveryExchangeIsAccepted) {
  Mlp m;
  for (const char* exchange : {"allgather", "sparse_allreduce", "auto"})
    EXPECT_NO_THROW(cddp::CompressedSGD(m.params, cddp::CompressedSGDOptions(0.1).overlap(true).exchange(exchange)))
        << exchange;
}

}  // namespace
