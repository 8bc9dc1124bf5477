// thread_communicator.h — W in-process "ranks" for tests: threads sharing an in-memory
// Communicator (ThreadCommunicator over a ThreadWorld) and on_ranks() to run a body on each.
// Collectives are exact ATen sums/copies, in rank order, so results are deterministic.
//
// It will not model a network, padding rules aside: allgather insists on equal sizes, as
// Gloo in LibTorch 1.13 does.
#pragma once

#include <cddp/communicator.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cddp::testing {

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

// Runs body(comm, rank) for W in-process ranks, one thread each, and waits for all of them.
inline void on_ranks(int world_size, const std::function<void(cddp::Communicator&, int)>& body) {
  ThreadWorld world(world_size);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r)
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(world, r);
      body(comm, r);
    });
  for (auto& t : threads) t.join();
}

}  // namespace cddp::testing
