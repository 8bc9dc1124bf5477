// gradient_exchange_test.cpp — GradientExchange over W in-process "ranks" (threads sharing an
// in-memory communicator): averages, bitwise agreement between ranks, selections of
// different sizes (padding), empty selections, shared-index and dense paths, byte counts.
#include <cddp/gradient_exchange.h>
#include <cddp/local_communicator.h>

#include "test_plugins.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace {

// All ranks meet in `round`; each deposits its tensor, the last one in wakes the others.
class ThreadWorld {
 public:
  explicit ThreadWorld(int world) : world_(world), slots_(world) {}
  std::vector<at::Tensor> exchange(int rank, const at::Tensor& t) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t my_round = round_;
    slots_[rank] = t.clone();
    if (++arrived_ == world_) {
      result_ = slots_;
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return round_ != my_round; });
    }
    return result_;
  }
  int world() const { return world_; }

 private:
  int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<at::Tensor> slots_, result_;
  int arrived_ = 0;
  int64_t round_ = 0;
};

class ThreadCommunicator final : public cddp::Communicator {
 public:
  ThreadCommunicator(ThreadWorld& w, int rank) : w_(w), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return w_.world(); }
  std::string backend_name() const override { return "threads"; }
  void allreduce_sum_(at::Tensor& t) override {
    auto all = w_.exchange(rank_, t);
    at::Tensor sum = all[0].clone();
    for (size_t r = 1; r < all.size(); ++r) sum.add_(all[r]);
    t.copy_(sum);
  }
  std::vector<at::Tensor> allgather(const at::Tensor& t) override {
    auto all = w_.exchange(rank_, t);
    for (auto& a : all) EXPECT_EQ(a.sizes(), t.sizes()) << "allgather needs equal sizes on every rank";
    return all;
  }
  void broadcast_(at::Tensor& t, int root) override { t.copy_(w_.exchange(rank_, t)[root]); }
  void barrier() override { w_.exchange(rank_, at::zeros({1})); }

 private:
  ThreadWorld& w_;
  int rank_;
};

// A codec that only decodes; the selections are built by hand in the tests.
class PlainCodec final : public cddp::Compressor {
 public:
  std::string name() const override { return "plain"; }
  std::vector<c10::DeviceType> supported_devices() const override { return {c10::DeviceType::CPU}; }
  cddp::Compressed compress(const at::Tensor&, const cddp::CompressContext&) override { return {}; }
};

cddp::Compressed selection(std::vector<int32_t> idx, std::vector<float> vals, int64_t numel) {
  cddp::Compressed c;
  c.indices = at::tensor(c10::ArrayRef<int32_t>(idx), at::kInt);
  c.values = at::tensor(c10::ArrayRef<float>(vals), at::kFloat);
  if (idx.empty()) {
    c.indices = at::empty({0}, at::kInt);
    c.values = at::empty({0}, at::kFloat);
  }
  c.numel = numel;
  c.shape = {numel};
  c.dtype = at::kFloat;
  return c;
}

TEST(GradientExchange, SparseAverageWithUnequalAndEmptySelections) {
  const int W = 3;
  ThreadWorld world(W);
  PlainCodec codec;
  // rank r selects r+... entries of tensor A; rank 1 selects nothing of tensor B.
  std::vector<std::vector<cddp::Compressed>> sel = {
      {selection({0, 5}, {3.f, 6.f}, 8), selection({1}, {9.f}, 4)},
      {selection({5}, {3.f}, 8), selection({}, {}, 4)},
      {selection({0, 2, 7}, {3.f, 1.5f, 3.f}, 8), selection({1, 3}, {3.f, 3.f}, 4)}};
  std::vector<std::vector<at::Tensor>> out(W);
  std::vector<cddp::StepStats> stats(W);
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r)
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(world, r);
      cddp::GradientExchange ex(comm);
      out[r] = {at::empty({8}), at::empty({4})};
      std::vector<cddp::SparseSlot> slots = {{&sel[r][0], &codec, &out[r][0]}, {&sel[r][1], &codec, &out[r][1]}};
      ex.average_sparse(slots, stats[r]);
    });
  for (auto& t : threads) t.join();
  EXPECT_TRUE(at::allclose(out[0][0], at::tensor({2.f, 0.f, 0.5f, 0.f, 0.f, 3.f, 0.f, 1.f})));
  EXPECT_TRUE(at::allclose(out[0][1], at::tensor({0.f, 4.f, 0.f, 1.f})));
  for (int r = 1; r < W; ++r) {
    EXPECT_TRUE(at::equal(out[r][0], out[0][0])) << "rank " << r << " differs bitwise";
    EXPECT_TRUE(at::equal(out[r][1], out[0][1])) << "rank " << r << " differs bitwise";
  }
  // Every rank hands the collective the padded size of the largest selection.
  EXPECT_EQ(stats[0].bytes_sent, stats[1].bytes_sent);
  EXPECT_EQ(stats[0].bytes_received, (W - 1) * stats[0].bytes_sent);
}

TEST(GradientExchange, SharedIndicesAllreduceValuesOnly) {
  const int W = 2;
  ThreadWorld world(W);
  PlainCodec codec;
  std::vector<cddp::Compressed> sel = {selection({1, 2}, {2.f, 4.f}, 4), selection({1, 2}, {6.f, 0.f}, 4)};
  std::vector<at::Tensor> out(W);
  std::vector<cddp::StepStats> stats(W);
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r)
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(world, r);
      cddp::GradientExchange ex(comm);
      out[r] = at::empty({4});
      std::vector<cddp::SparseSlot> slots = {{&sel[r], &codec, &out[r]}};
      ex.average_shared(slots, stats[r]);
    });
  for (auto& t : threads) t.join();
  EXPECT_TRUE(at::equal(out[0], at::tensor({0.f, 4.f, 2.f, 0.f})));
  EXPECT_TRUE(at::equal(out[1], out[0]));
  EXPECT_EQ(stats[0].payload_bytes, 2 * 4);  // values only
}

TEST(GradientExchange, DenseAverageIsCoalescedAndExact) {
  const int W = 2;
  ThreadWorld world(W);
  std::vector<std::vector<at::Tensor>> t = {{at::tensor({1.f, 2.f}), at::tensor({10.f})},
                                            {at::tensor({3.f, 4.f}), at::tensor({20.f})}};
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r)
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(world, r);
      cddp::GradientExchange ex(comm);
      cddp::StepStats st;
      ex.average_dense(t[r], st);
    });
  for (auto& th : threads) th.join();
  for (int r = 0; r < W; ++r) {
    EXPECT_TRUE(at::equal(t[r][0], at::tensor({2.f, 3.f})));
    EXPECT_TRUE(at::equal(t[r][1], at::tensor({15.f})));
  }
}

TEST(GradientExchange, WorldSizeOneIsTheIdentity) {
  cddp::LocalCommunicator local;
  cddp::GradientExchange ex(local);
  PlainCodec codec;
  cddp::Compressed c = selection({2}, {-1.f}, 3);
  at::Tensor avg = at::empty({3});
  std::vector<cddp::SparseSlot> slots = {{&c, &codec, &avg}};
  cddp::StepStats st;
  ex.average_sparse(slots, st);
  EXPECT_TRUE(at::equal(avg, at::tensor({0.f, 0.f, -1.f})));
  EXPECT_EQ(st.bytes_sent, 8);
  EXPECT_EQ(st.bytes_received, 0);
  EXPECT_TRUE(ex.any_rank(true));
  EXPECT_FALSE(ex.any_rank(false));
}

}  // namespace
