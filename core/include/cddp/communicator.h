// communicator.h — how tensors move between ranks. Nothing here decides *what* to send
// or *when*: that is GradientExchange's and CompressedSGD's business.
//
// Implementations: LocalCommunicator (world size 1, no store, no threads) in core, and
// C10dCommunicator (Gloo for CPU tensors, NCCL for CUDA tensors) over LibTorch's c10d.
// All calls are collective and blocking: every rank must call them in the same order with
// tensors of the same shape and dtype. Errors (a dead peer, a timeout) throw c10::Error.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cddp {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend_name() const = 0;

  // In place: each tensor becomes the elementwise sum over ranks.
  virtual void allreduce_sum_(at::Tensor& tensor) = 0;
  // Returns one tensor per rank, result[r] being rank r's `tensor`. Every rank must pass the
  // same shape (Gloo in LibTorch 1.13 cannot gather unequal sizes; pad first).
  virtual std::vector<at::Tensor> allgather(const at::Tensor& tensor) = 0;
  // allgather into `out` (resized to world_size()). Tensors already in `out` with the input's
  // shape, dtype and device are reused (C10dCommunicator), so a caller gathering the same size
  // every step does not allocate — and page-fault in — fresh buffers each time.
  virtual void allgather_into(const at::Tensor& tensor, std::vector<at::Tensor>& out) { out = allgather(tensor); }
  // Sends the r-th block of `input` (send_counts[r] elements, the blocks in rank order) to rank
  // r, and receives recv_counts[s] elements from each rank s,
  // concatenated in rank order. 1-D input, counts in elements, zero counts allowed; every rank's
  // recv_counts[s] must equal rank s's send_counts[me]. The default (communicator.cpp) is two
  // allgathers — correct anywhere, but every rank receives every whole input, so its traffic grows
  // with W; C10dCommunicator overrides it with c10d's alltoall_base (Gloo: uint8, int64, fp32).
  virtual at::Tensor alltoall(const at::Tensor& input, const std::vector<int64_t>& send_counts,
                              const std::vector<int64_t>& recv_counts);
  // In place: every rank ends with root's values.
  virtual void broadcast_(at::Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;
};

}  // namespace cddp
