// distributed_sampler.h — which sample indices each rank visits in an epoch, with the
// semantics of PyTorch's torch.utils.data.DistributedSampler:
//   - shuffle: a permutation of [0, N) drawn from a local generator seeded with seed + epoch
//     (std::mt19937_64 with an explicit Fisher–Yates, so it is identical on every rank, every
//     machine and every LibTorch version); otherwise 0, 1, ..., N−1;
//   - drop_last = false: the list is padded to a multiple of world_size by repeating its own
//     head (cyclically when N < padding); drop_last = true: its tail is cut instead;
//   - rank r takes positions r, r + W, r + 2W, ... of that list.
// So every rank gets num_samples() indices, the shards are disjoint except for the padding,
// and their union is the epoch. It will not batch, load data, or touch the global RNG.
#pragma once

#include <cstdint>
#include <vector>

namespace cddp {

class DistributedSampler {
 public:
  // Throws std::invalid_argument for dataset_size < 0, world_size < 1 or rank outside
  // [0, world_size).
  DistributedSampler(int64_t dataset_size, int world_size, int rank, bool shuffle, uint64_t seed,
                     bool drop_last = false);

  // Selects the permutation of the next indices() call (seed + epoch). Call it every epoch.
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }

  // This rank's indices for the current epoch, num_samples() of them.
  std::vector<int64_t> indices() const;

  int64_t num_samples() const { return num_samples_; }           // per rank
  int64_t total_size() const { return num_samples_ * world_size_; }  // over all ranks
  int64_t dataset_size() const { return dataset_size_; }
  int world_size() const { return world_size_; }
  int rank() const { return rank_; }

 private:
  int64_t dataset_size_;
  int world_size_;
  int rank_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  int64_t epoch_ = 0;
  int64_t num_samples_;
};

}  // namespace cddp
