// distributed_sampler.cpp — PyTorch DistributedSampler semantics on a local, portable
// generator. No batching, no global RNG.
#include <cddp/data/distributed_sampler.h>

#include "seeded_rng.h"

#include <numeric>
#include <stdexcept>
#include <string>

namespace cddp {

DistributedSampler::DistributedSampler(int64_t dataset_size, int world_size, int rank, bool shuffle, uint64_t seed,
                                       bool drop_last)
    : dataset_size_(dataset_size),
      world_size_(world_size),
      rank_(rank),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last) {
  if (dataset_size < 0) {
    throw std::invalid_argument("DistributedSampler: dataset_size must be >= 0, got " + std::to_string(dataset_size));
  }
  if (world_size < 1) {
    throw std::invalid_argument("DistributedSampler: world_size must be >= 1, got " + std::to_string(world_size));
  }
  if (rank < 0 || rank >= world_size) {
    throw std::invalid_argument("DistributedSampler: rank must be in [0, " + std::to_string(world_size) + "), got " +
                                std::to_string(rank));
  }
  // As in PyTorch: drop_last with N % W != 0 gives ceil((N − W) / W) = floor(N / W) per rank.
  num_samples_ = drop_last_ ? dataset_size_ / world_size_ : (dataset_size_ + world_size_ - 1) / world_size_;
}

void DistributedSampler::set_epoch(int64_t epoch) { epoch_ = epoch; }

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> order(static_cast<size_t>(dataset_size_));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (shuffle_) {
    data_detail::SeededRng rng(data_detail::derive_seed(seed_ + uint64_t(epoch_), 0x5A3D1E5ull));
    rng.shuffle(order);
  }
  const int64_t total = total_size();
  if (int64_t(order.size()) < total) {  // pad by repeating the head (cyclically)
    const size_t n = order.size();
    order.reserve(size_t(total));
    for (size_t i = 0; int64_t(order.size()) < total; ++i) order.push_back(order[i % n]);
  } else {
    order.resize(size_t(total));  // drop_last: cut the tail
  }
  std::vector<int64_t> mine;
  mine.reserve(size_t(num_samples_));
  for (int64_t i = rank_; i < total; i += world_size_) mine.push_back(order[size_t(i)]);
  return mine;
}

}  // namespace cddp
