// gradient_exchange.h — *how* compressed and dense gradients are averaged across ranks.
// CompressedSGD decides what goes where; this class packs, calls the Communicator, unpacks.
//
//  - sparse:  every rank's (values, indices) for all tensors of the step are packed into one
//             byte buffer, padded to the largest rank's size (Gloo needs equal sizes), and
//             allgathered once. Each rank then scatter-adds the ranks' selections in rank
//             order and divides by W, so every rank computes a bitwise identical average.
//  - shared:  compressors whose indices agree on every rank (seeded random-k) allreduce
//             only the values, in one coalesced buffer.
//  - dense:   tensors kept out of compression go through one flattened allreduce.
// It will not decide routing, apply momentum or touch residuals.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>

#include <vector>

namespace cddp {

struct SparseSlot {
  const Compressed* local;     // this rank's selection
  const Compressor* codec;     // decodes it (decompress_add_)
  at::Tensor* average;         // out: contiguous dense [numel], set to the mean over ranks
};

class GradientExchange {
 public:
  explicit GradientExchange(Communicator& comm) : comm_(comm) {}

  void average_sparse(std::vector<SparseSlot>& slots, StepStats& stats);
  void average_shared(std::vector<SparseSlot>& slots, StepStats& stats);
  // In place: each tensor becomes the mean over ranks.
  void average_dense(std::vector<at::Tensor>& tensors, StepStats& stats);
  // True on every rank if `local_flag` is true on any rank.
  bool any_rank(bool local_flag);

 private:
  Communicator& comm_;
};

}  // namespace cddp
