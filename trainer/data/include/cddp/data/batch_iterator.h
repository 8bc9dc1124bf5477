// batch_iterator.h — cuts a rank's sample indices into batches, with a position that a
// checkpoint can store (batch_index) so a resumed run continues mid-epoch, and gathers a
// batch's tensors from a Dataset. It will not shuffle (the sampler does), prefetch or
// augment.
#pragma once

#include <cddp/data/dataset.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace cddp {

class BatchIterator {
 public:
  // batch_size >= 1. drop_last drops a final batch shorter than batch_size. start_batch is
  // where to resume (see seek). Throws std::invalid_argument for bad arguments.
  BatchIterator(std::vector<int64_t> indices, int64_t batch_size, bool drop_last = false, int64_t start_batch = 0);

  int64_t num_batches() const { return num_batches_; }
  int64_t batch_size() const { return batch_size_; }
  // Index of the next batch next() returns = how many batches were consumed this epoch.
  int64_t batch_index() const { return batch_index_; }
  bool done() const { return batch_index_ >= num_batches_; }

  // The next batch's sample indices. Throws std::out_of_range when done().
  std::vector<int64_t> next();
  // Jumps to batch `batch_index` (0 ≤ batch_index ≤ num_batches()). Throws std::out_of_range.
  void seek(int64_t batch_index);

 private:
  std::vector<int64_t> indices_;
  int64_t batch_size_;
  int64_t num_batches_;
  int64_t batch_index_ = 0;
};

struct Batch {
  at::Tensor images;  // [B, C, H, W] float32
  at::Tensor labels;  // [B] int64
};

// The rows `indices` of `dataset` (copies). Throws std::out_of_range for an index outside
// [0, dataset.size()).
Batch gather_batch(const Dataset& dataset, const std::vector<int64_t>& indices);

}  // namespace cddp
