// c10d_communicator.cpp — C10dCommunicator: TCPStore rendezvous, Gloo (and NCCL) collectives,
// heartbeats, and error messages that name the rank that did not answer.
//
// It will not retry a failed collective, reconnect, or shrink the world: after a failure
// the communicator is broken and the caller is expected to stop (the launcher tears the
// job down). Everything that differs between LibTorch 1.13 and 2.x is in c10d_compat.h.
#include <cddp/c10d_communicator.h>

#include "c10d_compat.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <thread>

namespace cddp {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt_seconds(double s) {
  char buf[32];
  if (s >= 10 || s == static_cast<int64_t>(s)) std::snprintf(buf, sizeof buf, "%.0f", s);
  else std::snprintf(buf, sizeof buf, "%.1f", s);
  return buf;
}
std::string fmt_seconds(milliseconds ms) { return fmt_seconds(ms.count() / 1000.0); }

// c10::Error::what() carries a C++ backtrace in 1.13; messages for people do not need it.
std::string short_what(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

std::string ranks_text(const std::vector<int>& ranks) {
  std::ostringstream os;
  os << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size(); ++i) os << (i ? ", " : "") << ranks[i];
  return os.str();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

const char* kJoinedKey = "cddp/joined";
std::string rank_key(int r) { return "cddp/rank/" + std::to_string(r); }
std::string claim_key(int r) { return "cddp/claims/" + std::to_string(r); }
std::string heartbeat_key(int r) { return "cddp/heartbeat/" + std::to_string(r); }

// The heartbeat thread's state, shared with the thread so that it can outlive the
// communicator if a store call blocks (a stopped rank 0): it is then detached, not joined.
struct HeartbeatState {
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  bool done = false;
};

void heartbeat_loop(std::shared_ptr<HeartbeatState> hb, compat::StorePtr store, std::string key,
                    milliseconds interval) {
  std::unique_lock<std::mutex> lock(hb->m);
  while (!hb->stop) {
    lock.unlock();
    try {
      store->add(key, 1);
    } catch (...) {
      // The store is gone (rank 0 exited) or slow: a collective will report it.
    }
    lock.lock();
    hb->cv.wait_for(lock, interval, [&] { return hb->stop; });
  }
  hb->done = true;
  hb->cv.notify_all();
}

// True when something at host:port accepts a TCP connection within `limit`: a connect and a
// close, nothing sent. Used only to wait for rank 0's store to listen; the store's own protocol
// is c10d's.
bool accepts_connections(const std::string& host, int port, milliseconds limit) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool ok = false;
  for (addrinfo* a = found; a && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::poll(&p, 1, static_cast<int>(limit.count())) == 1 &&
           ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

// A stop request seen during the rendezvous: a c10::Error like every other failure here, but
// its own type, so that the rendezvous' catch blocks let it through unchanged.
struct Interrupted : c10::Error {
  explicit Interrupted(const std::string& msg)
      : c10::Error(c10::SourceLocation{__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, msg) {}
};

std::string failure_key(int r) { return "cddp/failed/" + std::to_string(r); }

// Runs `f(store)` on a helper thread and waits at most `limit`: a stopped store host would block
// a store call forever. On timeout the thread is detached (it holds its own references and ends
// when the call returns) and false is returned; false too when `f` throws.
template <class F>
bool bounded_store_call(const compat::StorePtr& store, milliseconds limit, F f) {
  struct State {
    std::mutex m;
    std::condition_variable cv;
    bool done = false, ok = false;
  };
  auto state = std::make_shared<State>();
  std::thread worker([state, store, f]() mutable {
    bool ok = true;
    try {
      f(*store);
    } catch (...) {
      ok = false;
    }
    std::lock_guard<std::mutex> lock(state->m);
    state->ok = ok;
    state->done = true;
    state->cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(state->m);
  if (!state->cv.wait_for(lock, limit, [&] { return state->done; })) {
    lock.unlock();
    worker.detach();
    return false;
  }
  lock.unlock();
  worker.join();
  return state->ok;
}

bool read_counters(const compat::StorePtr& store, int world, milliseconds limit, std::vector<int64_t>& out) {
  auto values = std::make_shared<std::vector<int64_t>>(world, -1);
  if (!bounded_store_call(store, limit, [values, world](c10d::Store& s) {
        for (int r = 0; r < world; ++r) (*values)[r] = s.add(heartbeat_key(r), 0);
      }))
    return false;
  out = *values;
  return true;
}

}  // namespace

struct C10dCommunicator::Impl {
  C10dOptions opt;
  std::string where;  // "addr:port" of the store
  compat::StorePtr store;
  compat::CollectivesPtr gloo;
#ifdef USE_C10D_NCCL
  compat::CollectivesPtr nccl;
#endif
  std::shared_ptr<HeartbeatState> heartbeat;
  std::thread heartbeat_thread;
  bool broken = false;
  std::string broken_reason;
  std::vector<int> silent;  // ranks the last diagnosis found without a heartbeat
  int64_t op_count = 0;

  explicit Impl(const C10dOptions& o);
  ~Impl();

  void rendezvous();
  void check_stop(const std::string& doing, Clock::time_point t0) const;
  void start_heartbeat();
  void stop_heartbeat();
  bool diagnose();
  void check_usable(const char* op) const;
  template <class Start>
  void run(const char* op, Start&& start);
  void linger_for_peers();
  [[noreturn]] void fail(const std::string& what, Clock::time_point t0, const std::string& cause);
  compat::Collectives& backend_for(const at::Tensor& t);
};

C10dCommunicator::Impl::Impl(const C10dOptions& o) : opt(o) {
  TORCH_CHECK(opt.world_size >= 1, "C10dCommunicator: world_size must be >= 1, got ", opt.world_size);
  TORCH_CHECK(opt.rank >= 0 && opt.rank < opt.world_size, "C10dCommunicator: rank ", opt.rank,
              " is outside [0, ", opt.world_size, ")");
  TORCH_CHECK(opt.master_port > 0 && opt.master_port < 65536, "C10dCommunicator: master_port ", opt.master_port,
              " is not a TCP port (1..65535)");
  TORCH_CHECK(!opt.master_addr.empty(), "C10dCommunicator: master_addr is empty");
  TORCH_CHECK(opt.timeout >= milliseconds(1000), "C10dCommunicator: timeout must be at least 1 s, got ",
              opt.timeout.count(), " ms");
  TORCH_CHECK(opt.heartbeat_interval >= milliseconds(10), "C10dCommunicator: heartbeat_interval must be >= 10 ms");
  // A diagnosis waits three intervals: keep that well inside the timeout.
  opt.heartbeat_interval = std::min(opt.heartbeat_interval, opt.timeout / 4);
  where = opt.master_addr + ":" + std::to_string(opt.master_port);
  rendezvous();
  start_heartbeat();

  const auto t0 = Clock::now();
  std::string hostname = opt.gloo_hostname;
  if (opt.gloo_interface.empty() && hostname.empty() && is_loopback(opt.master_addr)) hostname = "127.0.0.1";
  try {
    gloo = compat::make_gloo(compat::make_prefix_store("cddp/gloo", store), opt.rank, opt.world_size, opt.timeout,
                             opt.gloo_interface, hostname);
  } catch (const std::exception& e) {
    try {
      fail("setting up Gloo among " + std::to_string(opt.world_size) + " ranks", t0, short_what(e));
    } catch (...) {
      stop_heartbeat();  // the destructor does not run for a constructor that throws
      throw;
    }
  }
}

C10dCommunicator::Impl::~Impl() {
  try {
    linger_for_peers();
  } catch (...) {
  }
  stop_heartbeat();
#ifdef USE_C10D_NCCL
  nccl.reset();
#endif
  gloo.reset();
  store.reset();
}

void C10dCommunicator::Impl::stop_heartbeat() {
  if (heartbeat) {
    std::unique_lock<std::mutex> lock(heartbeat->m);
    heartbeat->stop = true;
    heartbeat->cv.notify_all();
    const bool done = heartbeat->cv.wait_for(lock, opt.heartbeat_interval + milliseconds(2000),
                                             [&] { return heartbeat->done; });
    lock.unlock();
    if (heartbeat_thread.joinable()) {
      if (done) heartbeat_thread.join();
      else heartbeat_thread.detach();  // blocked on a store that does not answer
    }
    heartbeat.reset();
  }
}

// Throws Interrupted once C10dOptions::stop reads non-zero: a rank that waits for peers that
// will never come (rank 0 failed, the launcher stops the job, a user's Ctrl-C) ends now.
void C10dCommunicator::Impl::check_stop(const std::string& doing, Clock::time_point t0) const {
  const int sig = opt.stop ? opt.stop->load() : 0;
  if (sig == 0) return;
  throw Interrupted("rendezvous: rank " + std::to_string(opt.rank) + " stopped by signal " + std::to_string(sig) +
                    " after " + fmt_seconds(seconds_since(t0)) + " s while waiting " + doing);
}

// Longer than 80 lines on purpose: its numbered stages (store, announce and count, backend)
// share one deadline t0 + timeout and one stop check, and read top to bottom as the protocol;
// split up, the deadline and the who-is-missing bookkeeping would travel between functions.
void C10dCommunicator::Impl::rendezvous() {
  const auto t0 = Clock::now();
  const int me = opt.rank, W = opt.world_size;
  const std::string T = fmt_seconds(opt.timeout);
  // 1. The store: rank 0 hosts it, everyone (rank 0 included) connects as a client. A client
  //    retries until the whole timeout has passed (rank 0 may start later; c10d's own connect
  //    loop gives up up to a second early), then keeps the full timeout for store calls.
  try {
    if (me == 0) {
      store = compat::make_tcp_store(opt.master_addr, static_cast<uint16_t>(opt.master_port), true, opt.timeout);
    } else {
      // Until rank 0 listens, wait with a quiet probe (each failed c10d connect logs an error
      // line) and look at the stop flag between probes; then connect through c10d.
      std::string last = "nothing accepted a connection there";
      while (!store) {
        check_stop("for the store at " + where, t0);
        if (Clock::now() - t0 >= opt.timeout) throw std::runtime_error(last);
        if (!accepts_connections(opt.master_addr, opt.master_port, milliseconds(100))) {
          std::this_thread::sleep_for(milliseconds(100));
          continue;
        }
        const auto left = std::chrono::duration_cast<milliseconds>(opt.timeout - (Clock::now() - t0));
        try {
          store = compat::make_tcp_store(opt.master_addr, static_cast<uint16_t>(opt.master_port), false,
                                         std::max(left, milliseconds(1000)));
        } catch (const std::exception& e) {
          last = short_what(e);
          std::this_thread::sleep_for(milliseconds(100));
        }
      }
      store->setTimeout(opt.timeout);
    }
  } catch (const Interrupted&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = short_what(e);
    if (me == 0) {
      const bool in_use = what.find("already in use") != std::string::npos ||  // 1.13 and libuv (2.x)
                          what.find("errno: 98") != std::string::npos || what.find("EADDRINUSE") != std::string::npos;
      if (in_use)
        TORCH_CHECK(false, "rendezvous: rank 0 could not host the store on ", where, ": port ", opt.master_port,
                    " is already in use (another job or a leftover process?); choose another MASTER_PORT. [c10d: ",
                    what, "]");
      TORCH_CHECK(false, "rendezvous: rank 0 could not host the store on ", where, " (waited ",
                  fmt_seconds(seconds_since(t0)), " s): ", what);
    }
    TORCH_CHECK(false, "rendezvous: rank ", me, " could not reach the store at ", where, " within ", T,
                " s (waited ", fmt_seconds(seconds_since(t0)), " s; rank 0 hosts it: is rank 0 running, and are ",
                "MASTER_ADDR/MASTER_PORT right?). [c10d: ", what, "]");
  }

  // 2. Announce this rank and count the ranks that joined, so a timeout can say who is missing.
  //    Store errors here mean rank 0 (the store's host) went away.
  auto lost = [&](const std::exception& e) {
    TORCH_CHECK(false, "rendezvous: rank ", me, " lost the store at ", where, " after ",
                fmt_seconds(seconds_since(t0)), " s (did rank 0 exit?): ", short_what(e));
  };
  int64_t joined = 0, claims = 0;
  std::vector<int> missing;
  try {
    claims = store->add(claim_key(me), 1);
    if (claims == 1) {
      store->set(rank_key(me), bytes_of(std::to_string(::getpid())));
      store->add(heartbeat_key(me), 1);
      joined = store->add(kJoinedKey, 1);
      while (joined < W && Clock::now() - t0 <= opt.timeout) {
        check_stop("for " + std::to_string(W - joined) + " more of " + std::to_string(W) + " ranks at " + where,
                   t0);
        std::this_thread::sleep_for(milliseconds(10));
        joined = store->add(kJoinedKey, 0);
      }
      if (joined < W)
        for (int r = 0; r < W; ++r)
          if (!store->check({rank_key(r)})) missing.push_back(r);
    }
  } catch (const Interrupted&) {
    throw;
  } catch (const std::exception& e) {
    lost(e);
  }
  TORCH_CHECK(claims == 1, "rendezvous at ", where, ": two processes claim rank ", me,
              " (duplicate RANK, or two jobs on one port)");
  TORCH_CHECK(joined >= W, "rendezvous at ", where, " did not complete within ", T, " s: ", joined, " of ", W,
              " ranks joined (missing: ", ranks_text(missing), ")");
  TORCH_CHECK(joined == W, "rendezvous at ", where, ": ", joined, " ranks joined but WORLD_SIZE is ", W,
              " (two jobs on one port?)");
}

void C10dCommunicator::Impl::start_heartbeat() {
  compat::StorePtr hb_store;
  try {  // its own connection, so that a heartbeat never waits behind a diagnosis
    hb_store = compat::make_tcp_store(opt.master_addr, static_cast<uint16_t>(opt.master_port), false, opt.timeout);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rendezvous: rank ", opt.rank, " could not open its heartbeat connection to ", where, ": ",
                short_what(e));
  }
  heartbeat = std::make_shared<HeartbeatState>();
  heartbeat_thread = std::thread(heartbeat_loop, heartbeat, hb_store, heartbeat_key(opt.rank), opt.heartbeat_interval);
}

// Which ranks stopped beating: counters read twice, three heartbeat intervals apart. Fills
// `silent`; false when the store itself does not answer (rank 0 gone or stopped).
bool C10dCommunicator::Impl::diagnose() {
  const int W = opt.world_size;
  const milliseconds limit = std::max(milliseconds(2000), opt.heartbeat_interval * 4);
  std::vector<int64_t> before, after;
  bool ok = read_counters(store, W, limit, before);
  if (ok) {
    std::this_thread::sleep_for(opt.heartbeat_interval * 3);
    ok = read_counters(store, W, limit, after);
  }
  silent.clear();
  if (!ok) {
    silent = {0};
    return false;
  }
  for (int r = 0; r < W; ++r)
    if (r != opt.rank && after[r] == before[r]) silent.push_back(r);
  return true;
}

void C10dCommunicator::Impl::check_usable(const char* op) const {
  TORCH_CHECK(!broken, "C10dCommunicator (rank ", opt.rank, "): ", op,
              " called after an earlier failure; the process group is unusable. First failure: ", broken_reason);
}

void C10dCommunicator::Impl::fail(const std::string& what, Clock::time_point t0, const std::string& cause) {
  const double waited = seconds_since(t0);
  const int W = opt.world_size, me = opt.rank;
  std::string who = "single rank";
  if (W > 1) {
    const bool store_ok = diagnose();
    // Ranks that failed before us posted what they found: a rank that only saw the fallout (a
    // live peer gave up and closed its connections) names the root cause through them.
    auto reports = std::make_shared<std::vector<std::pair<int, std::string>>>();
    if (store_ok)
      bounded_store_call(store, milliseconds(2000), [reports, W, me](c10d::Store& s) {
        for (int r = 0; r < W; ++r)
          if (r != me && s.check({failure_key(r)})) {
            auto v = s.get(failure_key(r));
            reports->emplace_back(r, std::string(v.begin(), v.end()));
          }
      });
    std::vector<int> root, gave_up;
    for (int r : silent) {
      bool reported = false;
      for (auto& [who_r, text] : *reports) reported = reported || who_r == r;
      (reported ? gave_up : root).push_back(r);
    }
    const bool timed_out = waited >= 0.9 * (opt.timeout.count() / 1000.0);
    if (!store_ok) {
      who = "rank 0 did not respond: the rendezvous store it hosts at " + where +
            " does not answer (rank 0 exited or is stopped)";
    } else if (!root.empty()) {
      who = ranks_text(root) + " did not respond";
      who += timed_out ? " within " + fmt_seconds(opt.timeout) + " s"
                       : " (the collective failed after " + fmt_seconds(waited) + " s)";
      who += root.size() == 1 ? " and its heartbeat has stopped (the process died or is stopped)"
                              : " and their heartbeats have stopped (the processes died or are stopped)";
    } else if (gave_up.empty()) {
      who = "every other rank is still alive (heartbeats advance): a rank is slow, stuck outside the collective, "
            "or called a different collective";
    } else {
      who = "no rank died of its own";
    }
    if (!gave_up.empty()) who += "; " + ranks_text(gave_up) + " stopped after failing themselves";
    auto mine = std::make_shared<std::string>(what + " failed: " + who);  // without others' reports
    for (auto& [r, text] : *reports) who += "; rank " + std::to_string(r) + " reported: " + text;
    const std::string key = failure_key(me);
    if (store_ok)
      bounded_store_call(store, milliseconds(2000), [mine, key](c10d::Store& s) { s.set(key, bytes_of(*mine)); });
  }
  std::ostringstream os;
  os << "rank " << me << ": " << what << " failed after " << fmt_seconds(waited) << " s (timeout "
     << fmt_seconds(opt.timeout) << " s): " << who << ". [c10d: " << cause << "]";
  broken = true;
  broken_reason = os.str();
  TORCH_CHECK(false, "C10dCommunicator: ", broken_reason);
}

// Rank 0 hosts the store: after a failure it stays a little while (bounded) so that the other
// live ranks can still read heartbeats and post their findings before the store goes away.
void C10dCommunicator::Impl::linger_for_peers() {
  if (!broken || opt.rank != 0 || opt.world_size < 2 || !store) return;
  const auto deadline = Clock::now() + opt.heartbeat_interval * 4 + milliseconds(3000);
  std::vector<int> waiting;
  for (int r = 1; r < opt.world_size; ++r)
    if (std::find(silent.begin(), silent.end(), r) == silent.end()) waiting.push_back(r);
  while (!waiting.empty() && Clock::now() < deadline) {
    auto left = std::make_shared<std::vector<int>>(waiting);
    if (!bounded_store_call(store, milliseconds(1000), [left](c10d::Store& s) {
          std::vector<int> still;
          for (int r : *left)
            if (!s.check({failure_key(r)})) still.push_back(r);
          *left = still;
        }))
      return;
    waiting = *left;
    if (!waiting.empty()) std::this_thread::sleep_for(milliseconds(50));
  }
}

template <class Start>
void C10dCommunicator::Impl::run(const char* op, Start&& start) {
  check_usable(op);
  const int64_t n = ++op_count;
  compat::WorkPtr work;
  try {
    work = start();
  } catch (const std::exception& e) {  // rejected before anything was sent: bad arguments
    TORCH_CHECK(false, "C10dCommunicator (rank ", opt.rank, "): ", op, " #", n, " rejected: ", short_what(e));
  }
  const auto t0 = Clock::now();
  try {
    compat::wait(work);
  } catch (const std::exception& e) {
    fail(std::string(op) + " #" + std::to_string(n), t0, short_what(e));
  }
}

compat::Collectives& C10dCommunicator::Impl::backend_for(const at::Tensor& t) {
  if (!t.is_cuda()) return *gloo;
#ifdef USE_C10D_NCCL
  if (!nccl) {  // lazily: only jobs that pass CUDA tensors pay for NCCL communicators
    const auto t0 = Clock::now();
    try {
      nccl = compat::make_nccl(compat::make_prefix_store("cddp/nccl", store), opt.rank, opt.world_size, opt.timeout);
    } catch (const std::exception& e) {
      fail("setting up NCCL", t0, short_what(e));
    }
  }
  return *nccl;
#else
  TORCH_CHECK(false, "C10dCommunicator: a CUDA tensor was passed, but this build of cddp has no NCCL "
              "(nccl.h was not found when it was configured: set NCCL_HOME and reconfigure); "
              "move the tensor to the CPU for Gloo");
#endif
}

// ---------------------------------------------------------------- C10dCommunicator

C10dCommunicator::C10dCommunicator(const C10dOptions& options) : impl_(std::make_unique<Impl>(options)) {}
C10dCommunicator::~C10dCommunicator() = default;

int C10dCommunicator::rank() const { return impl_->opt.rank; }
int C10dCommunicator::world_size() const { return impl_->opt.world_size; }
const C10dOptions& C10dCommunicator::options() const { return impl_->opt; }
bool C10dCommunicator::broken() const { return impl_->broken; }
std::string C10dCommunicator::torch_api() { return compat::torch_api_name(); }

bool C10dCommunicator::nccl_available() {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

std::string C10dCommunicator::backend_name() const {
  if (impl_->opt.cuda_over_gloo) return "gloo (cuda tensors staged through the host)";
#ifdef USE_C10D_NCCL
  if (impl_->nccl) return "gloo+nccl";
#endif
  return "gloo";
}

// With cuda_over_gloo a CUDA tensor is worked on as a host copy (Gloo), then copied back.
namespace {
bool staged(const at::Tensor& t, const C10dOptions& o) { return o.cuda_over_gloo && t.is_cuda(); }
}  // namespace

void C10dCommunicator::allreduce_sum_(at::Tensor& tensor) {
  TORCH_CHECK(tensor.defined(), "C10dCommunicator::allreduce_sum_: undefined tensor");
  at::Tensor work = staged(tensor, impl_->opt) ? tensor.to(at::kCPU).contiguous()
                    : tensor.is_contiguous()   ? tensor
                                               : tensor.contiguous();
  if (!compat::kGlooSumsBFloat16 && work.is_cpu() && work.scalar_type() == at::kBFloat16) {
    // LibTorch 1.13's Gloo cannot sum bf16: gather every rank's values, add them in rank order
    // in fp32 and round once, so every rank writes the same bits. (W−1)·B bytes in, not a ring's.
    // Its allgather refuses bf16 (and int16) too: the values travel as their bytes.
    std::vector<at::Tensor> all;
    allgather_into(work.reshape(-1).view(at::kByte), all);
    at::Tensor sum = all[0].view(at::kBFloat16).to(at::kFloat);
    for (size_t r = 1; r < all.size(); ++r) sum.add_(all[r].view(at::kBFloat16).to(at::kFloat));
    tensor.copy_(sum.view(tensor.sizes()));
    return;
  }
  std::vector<at::Tensor> tensors{work};
  auto& backend = impl_->backend_for(work);
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  impl_->run("allreduce", [&] { return backend.allreduce(tensors, opts); });
  if (!work.is_same(tensor)) tensor.copy_(work);
}

std::vector<at::Tensor> C10dCommunicator::allgather(const at::Tensor& tensor) {
  std::vector<at::Tensor> out;
  allgather_into(tensor, out);
  return out;
}

void C10dCommunicator::allgather_into(const at::Tensor& tensor, std::vector<at::Tensor>& out) {
  TORCH_CHECK(tensor.defined(), "C10dCommunicator::allgather: undefined tensor");
  const bool stage = staged(tensor, impl_->opt);
  at::Tensor in = stage ? tensor.to(at::kCPU).contiguous() : tensor.contiguous();
  std::vector<at::Tensor> inputs{in};
  std::vector<std::vector<at::Tensor>> outputs(1);
  const int W = impl_->opt.world_size;
  auto reusable = [&](int r) {
    return r < int(out.size()) && out[r].defined() && out[r].is_contiguous() &&
           out[r].sizes() == in.sizes() && out[r].scalar_type() == in.scalar_type() &&
           out[r].device() == tensor.device() && !out[r].is_same(tensor);
  };
  for (int r = 0; r < W; ++r)
    outputs[0].push_back(!stage && reusable(r) ? out[r] : at::empty_like(in, at::MemoryFormat::Contiguous));
  auto& backend = impl_->backend_for(in);
  // List allgather, not _allgather_base: Gloo in 1.13 has no flat variant. Equal shapes only.
  impl_->run("allgather", [&] { return backend.allgather(outputs, inputs, c10d::AllgatherOptions()); });
  if (!stage) {
    out = std::move(outputs[0]);
    return;
  }
  std::vector<at::Tensor> back(W);
  for (int r = 0; r < W; ++r) {
    if (reusable(r)) {
      out[r].copy_(outputs[0][r]);
      back[r] = out[r];
    } else {
      back[r] = outputs[0][r].to(tensor.device());
    }
  }
  out = std::move(back);
}

at::Tensor C10dCommunicator::alltoall(const at::Tensor& input, const std::vector<int64_t>& send_counts,
                                      const std::vector<int64_t>& recv_counts) {
  const int W = impl_->opt.world_size;
  TORCH_CHECK(input.defined() && input.is_cpu(), "C10dCommunicator::alltoall: needs a defined CPU tensor");
  TORCH_CHECK(static_cast<int>(send_counts.size()) == W && static_cast<int>(recv_counts.size()) == W,
              "C10dCommunicator::alltoall: ", send_counts.size(), " send and ", recv_counts.size(),
              " receive counts for ", W, " ranks");
  at::Tensor in = input.reshape(-1).contiguous();
  int64_t total = 0;
  for (int64_t c : recv_counts) total += c;
  at::Tensor out = at::empty({total}, in.options());
  std::vector<int64_t> sends = send_counts, recvs = recv_counts;  // c10d takes them by reference
  // Gloo in LibTorch 1.13 has alltoall_base (uneven splits, zero-sized ones too), not alltoall.
  impl_->run("alltoall", [&] { return impl_->gloo->alltoall_base(out, in, recvs, sends, c10d::AllToAllOptions()); });
  return out;
}

void C10dCommunicator::broadcast_(at::Tensor& tensor, int root) {
  TORCH_CHECK(tensor.defined(), "C10dCommunicator::broadcast_: undefined tensor");
  TORCH_CHECK(root >= 0 && root < impl_->opt.world_size, "C10dCommunicator::broadcast_: root ", root,
              " is outside [0, ", impl_->opt.world_size, ")");
  at::Tensor work = staged(tensor, impl_->opt) ? tensor.to(at::kCPU).contiguous()
                    : tensor.is_contiguous()   ? tensor
                                               : tensor.contiguous();
  std::vector<at::Tensor> tensors{work};
  auto& backend = impl_->backend_for(work);
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.rootTensor = 0;
  impl_->run("broadcast", [&] { return backend.broadcast(tensors, opts); });
  if (!work.is_same(tensor)) tensor.copy_(work);
}

void C10dCommunicator::barrier() {
  impl_->run("barrier", [&] { return impl_->gloo->barrier(c10d::BarrierOptions()); });
}

}  // namespace cddp
