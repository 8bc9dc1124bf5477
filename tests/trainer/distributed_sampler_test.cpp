// distributed_sampler_test.cpp — DistributedSampler: for W in {1,2,3,4} the shards are
// disjoint apart from the padding and cover the epoch; reshuffling per epoch; identical on
// independent rank objects; PyTorch's padding / drop_last layout. No data is loaded.
#include <cddp/data/distributed_sampler.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <stdexcept>

namespace {

std::vector<std::vector<int64_t>> shards(int64_t n, int w, bool shuffle, uint64_t seed, bool drop_last, int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (int r = 0; r < w; ++r) {
    cddp::DistributedSampler s(n, w, r, shuffle, seed, drop_last);  // a fresh object per rank, like separate processes
    s.set_epoch(epoch);
    out.push_back(s.indices());
  }
  return out;
}

}  // namespace

TEST(DistributedSampler, ShardsPartitionTheEpoch) {
  for (int w : {1, 2, 3, 4}) {
    for (int64_t n : {1, 2, 3, 7, 10, 12, 101}) {
      for (bool shuffle : {false, true}) {
        SCOPED_TRACE("W=" + std::to_string(w) + " N=" + std::to_string(n) + " shuffle=" + std::to_string(shuffle));
        const auto parts = shards(n, w, shuffle, 42, false, 3);
        const int64_t per_rank = (n + w - 1) / w;
        std::map<int64_t, int> seen;
        for (const auto& p : parts) {
          ASSERT_EQ(int64_t(p.size()), per_rank);  // equal sizes: equal step counts on every rank
          for (int64_t i : p) {
            ASSERT_GE(i, 0);
            ASSERT_LT(i, n);
            seen[i]++;
          }
        }
        EXPECT_EQ(int64_t(seen.size()), n);  // the union is the epoch
        int64_t extra = 0;
        for (const auto& [i, count] : seen) extra += count - 1;
        EXPECT_EQ(extra, per_rank * w - n);  // overlap is exactly the padding
      }
    }
  }
}

TEST(DistributedSampler, DropLastGivesDisjointShards) {
  for (int w : {1, 2, 3, 4}) {
    for (int64_t n : {3, 7, 10, 12, 101}) {
      SCOPED_TRACE("W=" + std::to_string(w) + " N=" + std::to_string(n));
      const auto parts = shards(n, w, true, 9, true, 0);
      std::set<int64_t> all;
      for (const auto& p : parts) {
        ASSERT_EQ(int64_t(p.size()), n / w);
        for (int64_t i : p) EXPECT_TRUE(all.insert(i).second) << "index " << i << " on two ranks";
      }
      EXPECT_EQ(int64_t(all.size()), (n / w) * w);
    }
  }
}

TEST(DistributedSampler, PyTorchLayoutWithoutShuffle) {
  // N=10, W=4: padded to [0..9, 0, 1]; rank r takes r, r+4, r+8.
  const auto parts = shards(10, 4, false, 0, false, 0);
  EXPECT_EQ(parts[0], (std::vector<int64_t>{0, 4, 8}));
  EXPECT_EQ(parts[1], (std::vector<int64_t>{1, 5, 9}));
  EXPECT_EQ(parts[2], (std::vector<int64_t>{2, 6, 0}));
  EXPECT_EQ(parts[3], (std::vector<int64_t>{3, 7, 1}));
  const auto dropped = shards(10, 4, false, 0, true, 0);
  EXPECT_EQ(dropped[0], (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(dropped[3], (std::vector<int64_t>{3, 7}));
  // N < padding: the list repeats cyclically (N=2, W=4 → [0,1,0,1]).
  const auto tiny = shards(2, 4, false, 0, false, 0);
  EXPECT_EQ(tiny[2], (std::vector<int64_t>{0}));
  EXPECT_EQ(tiny[3], (std::vector<int64_t>{1}));
  // Empty dataset: nothing anywhere.
  EXPECT_TRUE(shards(0, 3, true, 0, false, 0)[1].empty());
}

TEST(DistributedSampler, ReshufflesPerEpochDeterministically) {
  cddp::DistributedSampler s(100, 2, 1, true, 7);
  s.set_epoch(0);
  const auto e0 = s.indices();
  s.set_epoch(1);
  const auto e1 = s.indices();
  EXPECT_NE(e0, e1);
  auto sorted0 = e0, sorted1 = e1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  EXPECT_NE(sorted0, sorted1);  // a different half of the data, not just another order
  s.set_epoch(0);
  EXPECT_EQ(s.indices(), e0);
  EXPECT_EQ(s.epoch(), 0);
  // Same rank, another object: same indices. Another seed: different ones.
  cddp::DistributedSampler twin(100, 2, 1, true, 7);
  EXPECT_EQ(twin.indices(), e0);
  cddp::DistributedSampler other(100, 2, 1, true, 8);
  EXPECT_NE(other.indices(), e0);
  // A shuffled epoch is not the identity order.
  std::vector<int64_t> identity(50);
  for (int i = 0; i < 50; ++i) identity[size_t(i)] = 2 * i + 1;
  EXPECT_NE(e0, identity);
}

TEST(DistributedSampler, Accessors) {
  cddp::DistributedSampler s(10, 4, 3, true, 1);
  EXPECT_EQ(s.num_samples(), 3);
  EXPECT_EQ(s.total_size(), 12);
  EXPECT_EQ(s.dataset_size(), 10);
  EXPECT_EQ(s.world_size(), 4);
  EXPECT_EQ(s.rank(), 3);
  cddp::DistributedSampler d(10, 4, 3, true, 1, true);
  EXPECT_EQ(d.num_samples(), 2);
}

TEST(DistributedSampler, RejectsBadArguments) {
  EXPECT_THROW(cddp::DistributedSampler(10, 0, 0, true, 0), std::invalid_argument);
  EXPECT_THROW(cddp::DistributedSampler(10, 2, 2, true, 0), std::invalid_argument);
  EXPECT_THROW(cddp::DistributedSampler(10, 2, -1, true, 0), std::invalid_argument);
  EXPECT_THROW(cddp::DistributedSampler(-1, 2, 0, true, 0), std::invalid_argument);
}
