// counting_communicator.h — a Communicator that passes every call on to another and counts
// them: all collectives (`calls`, readable while other threads call), and the allreduces with
// their sizes in entries, in call order.
#pragma once

#include <cddp/communicator.h>

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace cddp::testing {

class CountingCommunicator final : public cddp::Communicator {
 public:
  explicit CountingCommunicator(cddp::Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }
  std::string backend_name() const override { return "counting"; }
  void allreduce_sum_(at::Tensor& t) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      allreduce_sizes_.push_back(t.numel());
    }
    ++calls, inner_.allreduce_sum_(t);
  }
  std::vector<at::Tensor> allgather(const at::Tensor& t) override { return ++calls, inner_.allgather(t); }
  void allgather_into(const at::Tensor& t, std::vector<at::Tensor>& out) override {
    ++calls, inner_.allgather_into(t, out);
  }
  void broadcast_(at::Tensor& t, int root) override { ++calls, inner_.broadcast_(t, root); }
  void barrier() override { ++calls, inner_.barrier(); }

  std::vector<int64_t> allreduce_sizes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return allreduce_sizes_;
  }
  std::atomic<int> calls{0};

 private:
  cddp::Communicator& inner_;
  mutable std::mutex mutex_;
  std::vector<int64_t> allreduce_sizes_;
};

}  // namespace cddp::testing
