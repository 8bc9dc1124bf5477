// comm_worker.h — the one thread on which an overlapped exchange runs its bucket jobs, first in
// first out. Collectives are blocking and must be issued in the same order on every rank and
// never from two threads at once (communicator.h): one thread per optimizer, running jobs in the
// order they were submitted, gives both.
//
// The first job that throws stops the queue: later jobs are dropped (on every rank the same job
// fails, or a peer is gone, so none would meet its collective) and wait() rethrows that error.
// Each job runs with grad mode off and with the intra-op thread count of the thread that
// submitted it, so ATen's reductions split their work as the serial path does (same bits).
//
// It will not decide what a job does, retry one, or time one out: a collective's timeout is the
// communicator's.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace cddp::detail {

class CommWorker {
 public:
  CommWorker();
  ~CommWorker();  // finishes the job in hand, drops the rest, joins
  CommWorker(const CommWorker&) = delete;
  CommWorker& operator=(const CommWorker&) = delete;

  void submit(std::function<void()> job);
  // Blocks until every submitted job has run (or was dropped after an error); rethrows the
  // first error, after which the worker takes jobs again.
  void wait();

 private:
  struct Job {
    std::function<void()> run;
    int intra_op_threads;
  };
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the members it reads
};

}  // namespace cddp::detail
