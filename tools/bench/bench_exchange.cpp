// bench_exchange.cpp — sparse gradient exchange vs a dense Gloo allreduce, 2 ranks on loopback.
//
//   bench_exchange [--numel 25000000] [--ratio 0.01] [--iters 7] [--nproc 2]
//   bench_exchange --world 2,4,8 [--numel N] [--ratio R] [--iters I] [--json FILE]
//
// --world: for each listed W, W local ranks exchange each rank's own top-k selection of one
// --numel fp32 gradient with every sparse exchange — allgather and sparse allreduce, fp32 and bf16
// values — and the dense Gloo allreduce, and time three empty-ish collectives (8 bytes: allreduce,
// allgather, alltoall) for the per-collective latency. Per exchange it prints the per-rank bytes
// received (mean over ranks, from StepStats), the model's formula for them, and the median time
// (the slowest rank's per iteration). --json writes the same rows for
// tools/experiments/scale_model.py. W ranks share this machine's cores: at W > cores the
// times measure CPU contention as much as the exchange.
//
// Started without RANK in the environment it re-executes itself on --nproc local ranks through
// cddp::launch_local; each rank then connects (TCPStore + Gloo on 127.0.0.1) and times, on one
// fp32 gradient of --numel elements:
//   sparse, coalesced  GradientExchange::average_sparse on the rank's real top-k selection (the
//            topk plugin, computed once before timing): packed allgather (counts known, so no
//            counts allgather) + rank-ordered decode + /W into a coalesced list (SparseAverage)
//            — what CompressedSGD::step does with momentum_mode "dgc", the default. Indices
//            travel Block16-coded (2 bytes each, the default); a second row sends them as int32;
//   sparse, kept zero  the same decoded into a dense output kept zero by a SparseOutputState —
//            what it does with "global" momentum. At this density the decode is the sweep: it
//            rewrites the whole output in one streaming pass, no clearing;
//   sparse, full clear  the same into a reused output without a state: the whole 100 MB output
//            is cleared each call (memset on a helper thread, overlapped with the allgathers);
//   sparse+alloc  the same into a freshly allocated output each time (what CompressedSGD::step
//            did before it kept its buffers: a 100 MB tensor page-faulted in on every step);
//   dense    Communicator::allreduce_sum_ of the whole tensor (Gloo ring allreduce).
// Then the update of a 25M parameter from each result, p −= lr·avg: add_sparse_ from the
// coalesced list against a dense add_ from the allreduced tensor, and both sums.
// Medians over --iters iterations after one warm-up; rank 0 prints a Markdown table, the
// ratio, and bytes_received against (W−1)·k·(4+4). Plain timing, not Google Benchmark.
//
// It will not check correctness (tests/dist does) and it reads the environment only in main().
#include <cddp/gradient_exchange.h>
#include <cddp/launcher.h>
#include <cddp/plugin_loader.h>
#include <cddp/rendezvous.h>

#include "sparse_allreduce.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Answers every collective locally as if all W ranks had sent this rank's tensor.
class Mirror final : public cddp::Communicator {
 public:
  explicit Mirror(int world) : world_(world) {}
  int rank() const override { return 0; }
  int world_size() const override { return world_; }
  std::string backend_name() const override { return "mirror"; }
  void allreduce_sum_(at::Tensor& t) override { t.mul_(world_); }
  std::vector<at::Tensor> allgather(const at::Tensor& t) override { return std::vector<at::Tensor>(world_, t); }
  void broadcast_(at::Tensor&, int) override {}
  void barrier() override {}

 private:
  int world_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct Opts {
  int64_t numel = 25000000;
  double ratio = 0.01;
  int iters = 7;
  int nproc = 2;
  std::vector<int> worlds;  // --world: the scaling table
  std::string json;         // --world --json FILE
};

// The per-rank received-bytes formula of each exchange of one k-entry selection (wire_cost.h,
// sparse_allreduce.h), with its text.
struct Formula {
  double bytes;
  std::string text;
};
Formula formula_for(const std::string& exchange, int64_t k, int64_t numel, int W, int64_t value_bytes) {
  const double idx = double(cddp::index_wire_bytes(k, numel, cddp::IndexCoding::Block16));
  const double v = double(value_bytes);
  if (exchange == "allgather")
    return {(W - 1) * (k * v + idx), "(W-1)*(k*" + std::to_string(value_bytes) + " + Block16 index bytes)"};
  if (exchange == "sparse_allreduce")  // the library's own model (sparse_allreduce.h)
    return {cddp::detail::sparse_allreduce_received_bytes(k, numel, value_bytes, value_bytes, W),
            "(W-1)*(off(s,R) + s*" + std::to_string(value_bytes) + ") + (W-1)*(8 + off(b,R) + b*" +
                std::to_string(value_bytes) + ") + 16*(W-1), s = b = ceil(k/W), R = ceil(N/W), off(n,R) = "
                "min(4n, 4*ceil(R/65536) + 2n)"};
  return {2.0 * (W - 1) / W * 4.0 * double(numel), "2*(W-1)/W*4*N"};
}

// One rank of either table: one thread, its process group, its gradient (seeded by the rank)
// and the real top-k selection of it, made once.
struct RankSelection {
  std::shared_ptr<cddp::Communicator> comm;
  at::Tensor grad;
  cddp::PluginLoader loader{cddp::PluginSearchPath::standard({CDDP_BENCH_PLUGIN_DIR}, nullptr)};
  std::shared_ptr<cddp::PluginCompressor> topk;
  cddp::Compressed sel;
  double select_ms = 0;  // the selection's time

  RankSelection(const Opts& o, const cddp::EnvMap& env, std::chrono::seconds timeout) {
    at::set_num_threads(1);
    comm = cddp::connect(cddp::parse_dist_env(env), timeout);
    grad = at::randn({o.numel}, at::detail::createCPUGenerator(1234 + comm->rank()));
    topk = loader.create("topk", {{"ratio", o.ratio}});
    cddp::CompressContext ctx;
    ctx.step = 1;
    ctx.param_name = "grad";
    ctx.ratio = o.ratio;
    const auto t0 = Clock::now();
    sel = topk->compress(grad, ctx);
    select_ms = ms_since(t0);
  }
};

// The slowest rank's time of each iteration, then the median: a collective ends when its last rank does.
double slowest_median(cddp::Communicator& comm, const std::vector<double>& ms) {
  at::Tensor t = at::tensor(ms, at::kDouble);
  std::vector<at::Tensor> all = comm.allgather(t);
  std::vector<double> worst(ms.size(), 0);
  for (auto& a : all)
    for (size_t i = 0; i < ms.size(); ++i) worst[i] = std::max(worst[i], a[i].item<double>());
  return median(worst);
}

// --world: one W of the scaling table (see the header).
int run_scaling(const Opts& o, const cddp::EnvMap& env) {
  RankSelection r(o, env, std::chrono::seconds(300));
  const std::shared_ptr<cddp::Communicator>& comm = r.comm;
  const at::Tensor& grad = r.grad;
  const auto& topk = r.topk;
  const cddp::Compressed& sel = r.sel;
  const int W = comm->world_size(), me = comm->rank();
  const int64_t k = sel.count();
  struct Row {
    std::string exchange, values;
    double bytes = 0, ms = 0;
    Formula f;
  };
  std::vector<Row> rows;
  for (const char* alg : {"allgather", "sparse_allreduce"})
    for (const char* values : {"fp32", "bf16"}) {
      cddp::ExchangeWire wire;
      wire.algorithm = std::string(alg) == "allgather" ? cddp::SparseAlgorithm::Allgather
                                                       : cddp::SparseAlgorithm::SparseAllreduce;
      wire.values = std::string(values) == "bf16" ? cddp::ValueWire::BFloat16 : cddp::ValueWire::Native;
      cddp::GradientExchange ex(*comm, wire);
      cddp::SparseAverage mean, back;
      at::Tensor unused = at::empty({0});
      std::vector<double> ms;
      cddp::StepStats st;
      for (int it = 0; it <= o.iters; ++it) {
        std::vector<cddp::SparseSlot> slots{{&sel, topk.get(), &unused, nullptr, k, &mean, &back}};
        st = cddp::StepStats();
        comm->barrier();
        auto t0 = Clock::now();
        ex.average_sparse(slots, st);
        if (it) ms.push_back(ms_since(t0));
      }
      at::Tensor bytes = at::tensor({double(st.bytes_received)}, at::kDouble);
      comm->allreduce_sum_(bytes);
      const int64_t vb = std::string(values) == "bf16" ? 2 : 4;
      rows.push_back({alg, values, bytes.item<double>() / W, slowest_median(*comm, ms), formula_for(alg, k, o.numel, W, vb)});
    }
  {
    std::vector<double> ms;
    for (int it = 0; it <= o.iters; ++it) {
      at::Tensor dense = grad.clone();
      comm->barrier();
      auto t0 = Clock::now();
      comm->allreduce_sum_(dense);
      if (it) ms.push_back(ms_since(t0));
    }
    Formula f = formula_for("dense", k, o.numel, W, 4);
    rows.push_back({"dense_allreduce", "fp32", f.bytes, slowest_median(*comm, ms), f});
  }
  // Latency per collective: 8 bytes each, 5x the iterations.
  std::vector<std::pair<std::string, double>> latency;
  for (const char* op : {"allreduce", "allgather", "alltoall"}) {
    std::vector<double> ms;
    for (int it = 0; it <= 5 * o.iters; ++it) {
      at::Tensor t = at::zeros({W}, at::kLong);
      comm->barrier();
      auto t0 = Clock::now();
      if (std::string(op) == "allreduce") comm->allreduce_sum_(t);
      else if (std::string(op) == "allgather") comm->allgather(t.narrow(0, 0, 1));
      else comm->alltoall(t, std::vector<int64_t>(W, 1), std::vector<int64_t>(W, 1));
      if (it) ms.push_back(ms_since(t0));
    }
    latency.emplace_back(op, slowest_median(*comm, ms));
  }
  comm->barrier();
  if (me != 0) return 0;
  std::printf("\nW=%d, N=%lld fp32, ratio %.4g, k=%lld per rank, %d iterations (median of the slowest rank)\n\n", W,
              static_cast<long long>(o.numel), o.ratio, static_cast<long long>(k), o.iters);
  std::printf("| exchange | values | bytes received per rank | formula | formula bytes | median ms |\n|---|---|---|---|---|---|\n");
  for (const Row& r : rows)
    std::printf("| %s | %s | %.0f | %s | %.0f | %.2f |\n", r.exchange.c_str(), r.values.c_str(), r.bytes,
                r.f.text.c_str(), r.f.bytes, r.ms);
  std::printf("\nlatency (8-byte collective, median of the slowest rank):");
  for (auto& [op, ms] : latency) std::printf(" %s %.3f ms", op.c_str(), ms);
  std::printf("\n");
  for (const Row& r : rows)
    std::printf("JSON {\"world\": %d, \"numel\": %lld, \"k\": %lld, \"exchange\": \"%s\", \"values\": \"%s\", "
                "\"bytes_received\": %.0f, \"formula_bytes\": %.0f, \"ms\": %.4f}\n",
                W, static_cast<long long>(o.numel), static_cast<long long>(k), r.exchange.c_str(), r.values.c_str(),
                r.bytes, r.f.bytes, r.ms);
  for (auto& [op, ms] : latency)
    std::printf("JSON {\"world\": %d, \"latency\": \"%s\", \"ms\": %.4f}\n", W, op.c_str(), ms);
  return 0;
}

int run_rank(const Opts& o, const cddp::EnvMap& env) {
  RankSelection r(o, env, std::chrono::seconds(120));
  const std::shared_ptr<cddp::Communicator>& comm = r.comm;
  const at::Tensor& grad = r.grad;
  const auto& topk = r.topk;
  const cddp::Compressed& sel = r.sel;
  const double select_ms = r.select_ms;
  const int W = comm->world_size(), me = comm->rank();
  const int64_t k = sel.count();

  cddp::GradientExchange exchange(*comm);  // Block16 indices, the default
  cddp::GradientExchange plain_exchange(*comm, cddp::IndexCoding::Plain);
  cddp::SparseAverage coalesced_plain;
  std::vector<double> coalesced_plain_ms;
  cddp::StepStats last_plain;
  at::Tensor out = at::empty({o.numel});   // full clear every call
  at::Tensor kept = at::empty({o.numel});  // kept zero between calls by `kept_state`
  cddp::SparseOutputState kept_state;
  cddp::SparseAverage coalesced;
  int64_t coalesced_count = 0;  // entries of the 2-rank average (the union of the ranks' indices)
  at::Tensor param_sparse = at::randn({o.numel}), param_dense = param_sparse.clone();
  const double lr = 1e-3;
  std::vector<double> coalesced_ms, apply_sparse_ms, sparse_ms, sparse_full_ms, sparse_alloc_ms, dense_ms,
      apply_dense_ms;
  cddp::StepStats last;
  // One timed average_sparse of `slot` after a barrier; the time is kept from iteration 1 on.
  auto timed = [&](cddp::GradientExchange& ex, const cddp::SparseSlot& slot, std::vector<double>& ms, int it) {
    std::vector<cddp::SparseSlot> slots{slot};
    cddp::StepStats st;
    comm->barrier();
    auto t0 = Clock::now();
    ex.average_sparse(slots, st);
    if (it) ms.push_back(ms_since(t0));
    return st;
  };
  for (int it = 0; it <= o.iters; ++it) {  // iteration 0 is the warm-up (and the first, full clear)
    cddp::SparseSlot to_list{&sel, topk.get(), &out, nullptr, sel.count()};  // `out` is not touched
    to_list.coalesced = &coalesced;
    last = timed(exchange, to_list, coalesced_ms, it);
    const auto t_update = Clock::now();
    cddp::add_sparse_(param_sparse, coalesced, -lr);
    if (it) apply_sparse_ms.push_back(ms_since(t_update));
    coalesced_count = coalesced.count();
    // As CompressedSGD does under "global": output kept zero, k known on every rank (no counts allgather).
    timed(exchange, {&sel, topk.get(), &kept, &kept_state, sel.count()}, sparse_ms, it);
    timed(exchange, {&sel, topk.get(), &out}, sparse_full_ms, it);
    {
      comm->barrier();
      auto t0 = Clock::now();
      at::Tensor fresh = at::empty({o.numel});
      std::vector<cddp::SparseSlot> slots{{&sel, topk.get(), &fresh}};
      cddp::StepStats st;
      exchange.average_sparse(slots, st);
      if (it) sparse_alloc_ms.push_back(ms_since(t0));
    }
    to_list.coalesced = &coalesced_plain;
    last_plain = timed(plain_exchange, to_list, coalesced_plain_ms, it);
    {
      at::Tensor dense = grad.clone();
      comm->barrier();
      auto t0 = Clock::now();
      comm->allreduce_sum_(dense);
      if (it) dense_ms.push_back(ms_since(t0));
      t0 = Clock::now();
      param_dense.add_(dense, -lr);
      if (it) apply_dense_ms.push_back(ms_since(t0));
    }
  }
  // Pieces of the sparse path, for the breakdown: the packed allgather alone, clearing the
  // output alone, and average_sparse over a Communicator that answers locally (every "rank"
  // sent this rank's selection): the exchange's local work — packing, clearing (in full, and
  // kept zero), W decodes, the division — without the network.
  std::vector<double> gather_ms, zero_ms, local_ms, local_kept_ms, local_coalesced_ms;
  at::Tensor local_kept = at::empty({o.numel});
  cddp::SparseOutputState local_state;
  const int64_t packed_bytes = (k * 4 + 7) / 8 * 8 + (cddp::index_wire_bytes(k, o.numel, cddp::IndexCoding::Block16) + 7) / 8 * 8;
  at::Tensor packed = at::zeros({packed_bytes}, at::kByte);
  std::vector<at::Tensor> gather_bufs;  // reused, as GradientExchange does
  Mirror mirror(W);
  cddp::GradientExchange local(mirror);
  for (int it = 0; it < o.iters; ++it) {
    comm->barrier();
    auto t0 = Clock::now();
    comm->allgather_into(packed, gather_bufs);
    gather_ms.push_back(ms_since(t0));
    t0 = Clock::now();
    out.zero_();
    zero_ms.push_back(ms_since(t0));
    std::vector<cddp::SparseSlot> slots{{&sel, topk.get(), &out}};
    cddp::StepStats st;
    t0 = Clock::now();
    local.average_sparse(slots, st);
    local_ms.push_back(ms_since(t0));
    std::vector<cddp::SparseSlot> kept_slots{{&sel, topk.get(), &local_kept, &local_state}};
    t0 = Clock::now();
    local.average_sparse(kept_slots, st);
    if (it) local_kept_ms.push_back(ms_since(t0));  // the first call clears fully
    cddp::SparseSlot coalesced_slot{&sel, topk.get(), &out, nullptr, sel.count()};
    coalesced_slot.coalesced = &coalesced;
    std::vector<cddp::SparseSlot> coalesced_slots{coalesced_slot};
    t0 = Clock::now();
    local.average_sparse(coalesced_slots, st);
    local_coalesced_ms.push_back(ms_since(t0));
  }
  if (local_kept_ms.empty()) local_kept_ms.push_back(0);
  comm->barrier();
  if (me != 0) return 0;

  const double sp = median(sparse_ms), spa = median(sparse_alloc_ms), de = median(dense_ms);
  const double index_bytes = double(cddp::index_wire_bytes(k, o.numel, cddp::IndexCoding::Block16));
  const double formula = double(W - 1) * (double(k) * 4 + index_bytes);
  std::printf("bench_exchange: W=%d, N=%lld fp32, ratio %.4g, k=%lld, %d iterations (median), 1 intra-op thread\n", W,
              static_cast<long long>(o.numel), o.ratio, static_cast<long long>(k), o.iters);
  std::printf("top-k selection (once, not timed below): %.1f ms\n\n", select_ms);
  std::printf("| path | median ms | min ms | max ms | vs dense |\n|---|---|---|---|---|\n");
  auto row = [&](const char* name, const std::vector<double>& v) {
    std::printf("| %s | %.2f | %.2f | %.2f | %.1f× |\n", name, median(v), *std::min_element(v.begin(), v.end()),
                *std::max_element(v.begin(), v.end()), de / median(v));
  };
  row("sparse: average_sparse to a coalesced list (CompressedSGD, momentum_mode dgc)", coalesced_ms);
  row("sparse: the same with plain int32 indices (index_coding plain)", coalesced_plain_ms);
  row("sparse: average_sparse, dense output kept zero (CompressedSGD, momentum_mode global)", sparse_ms);
  row("sparse: average_sparse, reused output cleared in full", sparse_full_ms);
  row("sparse: average_sparse, fresh 100 MB output each call", sparse_alloc_ms);
  row("dense: Gloo allreduce", dense_ms);
  std::printf("\nparts of the sparse path (medians, measured separately): allgather of the packed %lld bytes alone (into reused buffers) "
              "%.2f ms; zero_ of the output alone %.2f ms; average_sparse without the network %.2f ms (coalesced), "
              "%.2f ms (full clear), %.2f ms (kept zero)\n",
              static_cast<long long>(packed_bytes), median(gather_ms), median(zero_ms), median(local_coalesced_ms),
              median(local_ms), median(local_kept_ms));
  const double co = median(coalesced_ms);
  std::printf("speed-up dense/sparse (medians): %.1f× (coalesced), %.1f× (kept zero), %.1f× (full clear), "
              "%.1f× (fresh output); target >= 10× (coalesced, the default path): %s\n",
              de / co, de / sp, de / median(sparse_full_ms), de / spa, de / co >= 10 ? "met" : "MISSED");
  std::vector<double> step_sparse, step_dense;  // per iteration: exchange + update
  for (size_t i = 0; i < coalesced_ms.size(); ++i) {
    step_sparse.push_back(coalesced_ms[i] + apply_sparse_ms[i]);
    step_dense.push_back(dense_ms[i] + apply_dense_ms[i]);
  }
  std::printf("update p -= lr*avg of the %lld-element parameter (medians): add_sparse_ of the %lld coalesced entries "
              "%.2f ms, dense add_ %.2f ms; exchange + update: sparse %.2f ms, dense %.2f ms, %.1f×\n",
              static_cast<long long>(o.numel), static_cast<long long>(coalesced_count), median(apply_sparse_ms),
              median(apply_dense_ms), median(step_sparse), median(step_dense), median(step_dense) / median(step_sparse));
  std::printf("bytes_received per rank: %lld, formula (W-1)*(4k + Block16 index bytes %.0f) = %.0f, ratio %.4f "
              "(within 5%%: %s); plain int32 indices: %lld\n",
              static_cast<long long>(last.bytes_received), index_bytes, formula, double(last.bytes_received) / formula,
              std::abs(double(last.bytes_received) / formula - 1) <= 0.05 ? "yes" : "NO",
              static_cast<long long>(last_plain.bytes_received));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  bool worker = false, scaling = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_exchange: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--numel") o.numel = std::stoll(next());
      else if (a == "--ratio") o.ratio = std::stod(next());
      else if (a == "--iters") o.iters = std::stoi(next());
      else if (a == "--nproc") o.nproc = std::stoi(next());
      else if (a == "--worker") worker = true;
      else if (a == "--scaling") scaling = true;
      else if (a == "--json") o.json = next();
      else if (a == "--world") {
        std::stringstream list(next());
        for (std::string w; std::getline(list, w, ',');) o.worlds.push_back(std::stoi(w));
      }
      else {
        std::fprintf(stderr, "usage: bench_exchange [--numel N] [--ratio R] [--iters I] [--nproc W | --world 2,4,8 "
                     "[--json FILE]]\n");
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "bench_exchange: bad value for %s\n", a.c_str());
      return 2;
    }
  }
  for (int w : o.worlds)
    if (w < 2 || w > 64) {
      std::fprintf(stderr, "bench_exchange: --world takes ranks counts from 2 to 64, got %d\n", w);
      return 2;
    }
  if (o.numel < 1 || !(o.ratio > 0 && o.ratio <= 1) || o.iters < 1 || o.nproc < 2) {
    std::fprintf(stderr, "bench_exchange: need --numel >= 1, 0 < --ratio <= 1, --iters >= 1, --nproc >= 2\n");
    return 2;
  }
  const cddp::EnvMap env = cddp::environment_map(environ);
  try {
    if (worker) return scaling ? run_scaling(o, env) : run_rank(o, env);
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      std::fprintf(stderr, "bench_exchange: cannot find its own executable\n");
      return 1;
    }
    self[n] = '\0';
    std::vector<std::string> json;
    cddp::LaunchOptions lo;
    lo.nproc = o.nproc;
    lo.argv = {self, "--worker", "--numel", std::to_string(o.numel), "--ratio", std::to_string(o.ratio), "--iters",
               std::to_string(o.iters)};
    lo.env = env;
    lo.on_line = [&json](int rank, int stream, const std::string& line) {
      if (rank == 0 && stream == 1 && line.rfind("JSON ", 0) == 0) json.push_back(line.substr(5));
      else if (rank == 0 && stream == 1) std::printf("%s\n", line.c_str());
      else std::fprintf(stderr, "[rank %d] %s\n", rank, line.c_str());
      std::fflush(stdout);
    };
    if (o.worlds.empty()) return cddp::launch_local(lo);
    lo.argv.push_back("--scaling");
    std::printf("bench_exchange --world: one fp32 gradient of %lld entries, top-k ratio %.4g, on this machine's %u "
                "hardware threads (loopback Gloo)\n",
                static_cast<long long>(o.numel), o.ratio, std::thread::hardware_concurrency());
    for (int w : o.worlds) {
      lo.nproc = w;
      if (int rc = cddp::launch_local(lo)) return rc;
    }
    if (!o.json.empty()) {  // written whole, then renamed: never a half file
      const std::string tmp = o.json + ".tmp";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (!f) {
        std::fprintf(stderr, "bench_exchange: cannot write %s\n", tmp.c_str());
        return 1;
      }
      std::fprintf(f, "[\n");
      for (size_t i = 0; i < json.size(); ++i) std::fprintf(f, "  %s%s\n", json[i].c_str(), i + 1 < json.size() ? "," : "");
      std::fprintf(f, "]\n");
      if (std::fclose(f) != 0 || std::rename(tmp.c_str(), o.json.c_str()) != 0) {
        std::fprintf(stderr, "bench_exchange: cannot write %s\n", o.json.c_str());
        return 1;
      }
      std::printf("wrote %s\n", o.json.c_str());
    }
    return 0;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "bench_exchange: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_exchange: %s\n", e.what());
  }
  return 1;
}
