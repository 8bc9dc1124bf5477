// local_communicator.h — the world-size-1 Communicator: every collective is the identity.
// It lets a single process train with exactly the code path of a distributed run, without a
// store, sockets or threads.
#pragma once

#include <cddp/communicator.h>

namespace cddp {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend_name() const override { return "local"; }
  void allreduce_sum_(at::Tensor&) override {}
  std::vector<at::Tensor> allgather(const at::Tensor& tensor) override { return {tensor}; }
  void broadcast_(at::Tensor&, int) override {}
  void barrier() override {}
};

}  // namespace cddp
