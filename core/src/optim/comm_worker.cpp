// comm_worker.cpp — a FIFO job thread that keeps the first error (comm_worker.h).
#include "comm_worker.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

namespace cddp::detail {

CommWorker::CommWorker() : thread_([this] { loop(); }) {}

CommWorker::~CommWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

void CommWorker::submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_) return;  // the queue has stopped: wait() reports why
    queue_.push_back({std::move(job), at::get_num_threads()});
  }
  cv_.notify_all();
}

void CommWorker::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void CommWorker::loop() {
  c10::AutoGradMode no_grad(false);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    std::exception_ptr failed;
    try {
      if (at::get_num_threads() != job.intra_op_threads) at::set_num_threads(job.intra_op_threads);
      job.run();
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    if (failed && !error_) {
      error_ = failed;
      queue_.clear();
    }
    cv_.notify_all();
  }
}

}  // namespace cddp::detail
