// coalesced_rounds_test.cpp — run_coalesced_rounds (core/src/exchange/coalesced_rounds.h): the
// k-th allreduce of every protocol still running becomes one collective per dtype, each protocol
// gets its own sums back, a protocol that ends leaves the set, and a failure stops the others and
// is reported as the one that happened first, on every rank, without a hang.
#include "coalesced_rounds.h"

#include "counting_communicator.h"
#include "thread_communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using cddp::detail::RoundProtocol;
using cddp::detail::run_coalesced_rounds;
using cddp::testing::on_ranks;

using cddp::testing::CountingCommunicator;

// Protocol i: rounds(i) rounds, round k allreducing (i + 1) entries of value rank + 10·i + k.
int rounds_of(size_t i) { return int(i % 3) + 1; }

TEST(CoalescedRounds, OneCollectivePerRoundAndEveryProtocolGetsItsOwnSums) {
  const int W = 3;
  const size_t n = 5;  // rounds 1, 2, 3, 1, 2: three collectives of 5, 3 and 1 tensors
  on_ranks(W, [&](cddp::Communicator& base, int rank) {
    CountingCommunicator comm(base);
    cddp::StepStats st;
    std::vector<std::vector<at::Tensor>> got(n);
    std::vector<RoundProtocol> protocols;
    for (size_t i = 0; i < n; ++i)
      protocols.push_back([&, i](cddp::RoundCollective& c) {
        EXPECT_EQ(c.world_size(), W);
        for (int k = 0; k < rounds_of(i); ++k) {
          at::Tensor t = at::full({int64_t(i) + 1}, double(rank + 10 * int(i) + k), at::kFloat);
          c.allreduce_sum_(t);
          got[i].push_back(t);
        }
      });
    run_coalesced_rounds(comm, st, protocols);
    EXPECT_EQ(comm.calls.load(), 3) << "one collective a round, not one a tensor and round";
    EXPECT_EQ(comm.allreduce_sizes(), (std::vector<int64_t>{1 + 2 + 3 + 4 + 5, 2 + 3 + 5, 3}));
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(int(got[i].size()), rounds_of(i));
      for (int k = 0; k < rounds_of(i); ++k) {
        const double want = (0 + 1 + 2) + W * (10.0 * double(i) + k);  // Σ_r (r + 10i + k)
        EXPECT_TRUE(at::equal(got[i][size_t(k)], at::full({int64_t(i) + 1}, want, at::kFloat)))
            << "protocol " << i << " round " << k;
      }
    }
    EXPECT_EQ(st.payload_bytes, 4 * (15 + 10 + 3)) << "the bytes handed to the collectives";
  });
}

TEST(CoalescedRounds, DtypesGoInOneAllreduceEachAndOneProtocolRunsDirectly) {
  on_ranks(2, [&](cddp::Communicator& base, int rank) {
    CountingCommunicator comm(base);
    cddp::StepStats st;
    at::Tensor f = at::full({4}, 1.0 + rank, at::kFloat), d = at::full({3}, 0.5 * rank, at::kDouble);
    std::vector<RoundProtocol> two{[&](cddp::RoundCollective& c) { c.allreduce_sum_(f); },
                                   [&](cddp::RoundCollective& c) { c.allreduce_sum_(d); }};
    run_coalesced_rounds(comm, st, two);
    EXPECT_EQ(comm.calls.load(), 2) << "float and double cannot share a buffer";
    EXPECT_TRUE(at::equal(f, at::full({4}, 3.0, at::kFloat)));
    EXPECT_TRUE(at::equal(d, at::full({3}, 0.5, at::kDouble)));
    at::Tensor one = at::ones({2});
    run_coalesced_rounds(comm, st, {[&](cddp::RoundCollective& c) { c.allreduce_sum_(one); }});
    EXPECT_EQ(comm.calls.load(), 3);
    EXPECT_TRUE(at::equal(one, at::full({2}, 2.0)));
  });
}

TEST(CoalescedRounds, AFailureStopsTheOthersAndIsTheErrorReportedOnEveryRank) {
  std::atomic<int> reported{0};
  on_ranks(2, [&](cddp::Communicator& comm, int) {
    cddp::StepStats st;
    std::vector<RoundProtocol> protocols;
    for (int i = 0; i < 4; ++i)
      protocols.push_back([i](cddp::RoundCollective& c) {
        at::Tensor t = at::ones({3});
        c.allreduce_sum_(t);
        if (i == 2) throw std::runtime_error("tensor 2: boom");
        try {
          c.allreduce_sum_(t);  // waits for tensor 2, which never comes
        } catch (const std::exception& e) {
          // As a plugin does: the host's error comes back as the plugin's own.
          throw std::runtime_error(std::string("plugin wrapped: ") + e.what());
        }
      });
    try {
      run_coalesced_rounds(comm, st, protocols);
      ADD_FAILURE() << "no error";
    } catch (const std::exception& e) {
      EXPECT_EQ(std::string(e.what()), "tensor 2: boom") << "the cause, not the protocols it stopped";
      ++reported;
    }
  });
  EXPECT_EQ(reported.load(), 2);
}

}  // namespace
