// comm_worker_test.cpp — CommWorker: jobs in submission order on one other thread, wait()
// rethrows the first error and drops the jobs after it, the worker is usable again afterwards,
// and jobs run with the submitter's intra-op thread count and grad mode off.
// It will not test collectives (overlapped_step_test).
#include "comm_worker.h"

#include "test_plugins.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

using cddp::detail::CommWorker;
using cddp::testing::error_of;

TEST(CommWorker, RunsJobsInOrderOnAnotherThread) {
  CommWorker w;
  std::vector<int> order;
  std::thread::id ran_on;
  for (int i = 0; i < 50; ++i)
    w.submit([&, i] {
      order.push_back(i);
      ran_on = std::this_thread::get_id();
    });
  w.wait();
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[size_t(i)], i);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(CommWorker, FirstErrorStopsTheQueueAndIsRethrownOnce) {
  CommWorker w;
  std::vector<int> ran;
  w.submit([&] { ran.push_back(1); });
  w.submit([&] { TORCH_CHECK(false, "rank 3 did not respond"); });
  w.submit([&] { ran.push_back(3); });
  w.submit([&] { TORCH_CHECK(false, "second error"); });
  EXPECT_NE(error_of([&] { w.wait(); }).find("rank 3 did not respond"), std::string::npos);
  EXPECT_EQ(ran, std::vector<int>{1});
  w.wait();  // the error was reported once
  w.submit([&] { ran.push_back(5); });
  w.wait();
  EXPECT_EQ(ran, (std::vector<int>{1, 5}));
}

TEST(CommWorker, JobsSeeTheSubmittersThreadCountAndNoGrad) {
  const int before = at::get_num_threads();
  const int wanted = before > 1 ? 1 : 2;  // differs from what a fresh thread starts with
  at::set_num_threads(wanted);  // OpenMP: this thread's count only; the worker must follow it
  CommWorker w;
  int seen_threads = -1;
  bool grad_enabled = true;
  w.submit([&] {
    seen_threads = at::get_num_threads();
    grad_enabled = c10::GradMode::is_enabled();
  });
  w.wait();
  at::set_num_threads(before);
  EXPECT_EQ(seen_threads, wanted);
  EXPECT_FALSE(grad_enabled);
}
