// coalesced_rounds.cpp — run_coalesced_rounds (coalesced_rounds.h).
#include "coalesced_rounds.h"

#include <cddp/payload_exchange.h>

#include "wire_cost.h"
#include "../ms_since.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace cddp::detail {

namespace {

// What a waiting call throws when another protocol failed: not the cause, never rethrown.
struct RoundsAborted : std::runtime_error {
  RoundsAborted() : std::runtime_error("rounds aborted: another tensor's protocol failed") {}
};

class Coalescer {
 public:
  Coalescer(Communicator& comm, StepStats& stats, size_t n) : comm_(comm), stats_(stats), pending_(n), active_(n) {}

  // Tensor i's next allreduce: returns when the round it joined has been reduced.
  void submit(size_t i, at::Tensor& t) {
    TORCH_CHECK(t.is_contiguous(), "RoundCollective::allreduce_sum_ needs a contiguous tensor");
    std::unique_lock<std::mutex> lock(mutex_);
    if (failed_) throw RoundsAborted();
    pending_[i] = &t;
    ++waiting_;
    const uint64_t round = round_;
    if (waiting_ == active_) {
      reduce(lock, i);
      return;
    }
    ready_.wait(lock, [&] { return round_ != round || failed_; });
    if (round_ == round) {
      pending_[i] = nullptr;
      throw RoundsAborted();
    }
  }

  // Tensor i's protocol has returned (ok) or thrown.
  void leave(size_t i, bool ok) {
    std::unique_lock<std::mutex> lock(mutex_);
    --active_;
    if (!ok) {
      fail(i);
      return;
    }
    if (active_ > 0 && waiting_ == active_ && !failed_) reduce(lock, i);
  }

  // The protocol whose failure stopped the others (its error is the one to report); -1: none.
  // A failure seen once failed_ is set is a consequence (a plugin turns RoundsAborted into its
  // own error text, so the type alone cannot tell).
  int64_t cause() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cause_;
  }

 private:
  // Called with the lock held by the last caller of a round; every other running protocol is
  // waiting in submit(), so nothing else touches pending_ meanwhile.
  void reduce(std::unique_lock<std::mutex>& lock, size_t leader) {
    std::vector<at::Tensor*> parts;
    for (auto& p : pending_)
      if (p) parts.push_back(p), p = nullptr;
    waiting_ = 0;
    lock.unlock();
    try {
      allreduce_flat(parts);
    } catch (...) {
      lock.lock();
      fail(leader);
      throw;
    }
    lock.lock();
    ++round_;
    ready_.notify_all();
  }

  // One allreduce per (device, dtype) over the parts laid end to end, in tensor order.
  void allreduce_flat(const std::vector<at::Tensor*>& parts) {
    std::vector<bool> done(parts.size(), false);
    for (size_t first = 0; first < parts.size(); ++first) {
      if (done[first]) continue;
      std::vector<at::Tensor*> group;
      for (size_t j = first; j < parts.size(); ++j)
        if (!done[j] && parts[j]->scalar_type() == parts[first]->scalar_type() &&
            parts[j]->device() == parts[first]->device())
          group.push_back(parts[j]), done[j] = true;
      std::vector<at::Tensor> flat_parts;
      for (at::Tensor* t : group) flat_parts.push_back(t->view(-1));
      at::Tensor flat = group.size() == 1 ? *group[0] : at::cat(flat_parts);
      CountingRoundCollective(comm_, stats_).allreduce_sum_(flat);
      if (group.size() == 1) continue;
      int64_t offset = 0;
      for (at::Tensor* t : group) {
        t->view(-1).copy_(flat.narrow(0, offset, t->numel()));
        offset += t->numel();
      }
    }
  }

  void fail(size_t i) {  // with the lock held
    if (!failed_) cause_ = int64_t(i);
    failed_ = true;
    ready_.notify_all();
  }

  Communicator& comm_;
  StepStats& stats_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<at::Tensor*> pending_;  // by tensor index: its call in the round being formed
  size_t active_;                     // protocols still running
  size_t waiting_ = 0;                // of which this many have called in this round
  uint64_t round_ = 0;
  bool failed_ = false;
  int64_t cause_ = -1;
};

class CoalescedCollective final : public RoundCollective {
 public:
  CoalescedCollective(Coalescer& c, size_t index, int world) : c_(c), index_(index), world_(world) {}
  int world_size() const override { return world_; }
  void allreduce_sum_(at::Tensor& t) override { c_.submit(index_, t); }

 private:
  Coalescer& c_;
  size_t index_;
  int world_;
};

}  // namespace

void run_coalesced_rounds(Communicator& comm, StepStats& stats, const std::vector<RoundProtocol>& protocols) {
  if (protocols.size() <= 1 || comm.world_size() == 1) {  // nothing to coalesce
    CountingRoundCollective direct(comm, stats);
    for (const auto& protocol : protocols) protocol(direct);
    return;
  }
  Coalescer coalescer(comm, stats, protocols.size());
  std::vector<std::exception_ptr> errors(protocols.size());
  std::vector<std::thread> threads;
  threads.reserve(protocols.size());
  auto body = [&](size_t i) {
    // One intra-op thread each: the protocols are the parallelism, and a BLAS is called from
    // several threads at once only single-threaded in each (its safe mode).
    at::set_num_threads(1);
    at::NoGradGuard no_grad;  // grad mode is per thread; the step runs without it
    CoalescedCollective handle(coalescer, i, comm.world_size());
    try {
      protocols[i](handle);
    } catch (...) {
      errors[i] = std::current_exception();
      coalescer.leave(i, false);
      return;
    }
    try {
      coalescer.leave(i, true);  // may run the round the others wait for, which may throw
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  size_t started = 0;
  try {
    for (; started < protocols.size(); ++started) threads.emplace_back(body, started);
  } catch (...) {  // no thread for protocol `started` on: they leave, so the others can end
    for (size_t j = started; j < protocols.size(); ++j) coalescer.leave(j, false);
    for (auto& t : threads) t.join();
    throw;
  }
  for (auto& t : threads) t.join();
  const int64_t cause = coalescer.cause();
  if (cause >= 0 && errors[size_t(cause)]) std::rethrow_exception(errors[size_t(cause)]);
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace cddp::detail
