// bench_compressors — CPU selection kernels against the obvious alternatives, in one run:
//   radix_topk      RadixTopK::select_float (exact top-k of |x|, output sorted by index)
//   radix_topk_ef   the same fused with error feedback (acc = x + residual, residual updated;
//                   the residual is reset, untimed, before every iteration)
//   dgc_topk_chain  DGC's u ← 0.9·u + g (ATen mul_, add_) then radix_topk_ef of u
//   dgc_topk_fused  the same in one pass (RadixTopK::select_float_momentum)
//   torch_topk      at::topk(x.abs(), k)
//   nth_element     std::nth_element of |x| on a preallocated copy (threshold only; 1 thread)
//   read_sum        at::sum(x): one plain read pass, the floor
//   random_k        RadixTopK::select_smallest_philox (seeded random-k, Philox priorities)
// for N in {1M, 25M} (add --cddp_large for 100M), density in {10%, 1%, 0.1%}, threads 1 and 2
// (at::set_num_threads). Items are elements of the input: items/s = N / time.
// Names: <kernel>/<N>/<density>/t<threads>; select with --benchmark_filter=<regex>.
//
// The payload plugins (sign, cast, qsgd, terngrad, natural), loaded from the build tree's .so
// files as the trainer loads them, at 25M fp32 N(0, 1) entries, one thread:
//   read_pass/25M/t1              at::sum(x): one plain read pass over the same 25M floats
//   encode/<plugin>/25M/t1        Compressor::encode_into() into the payload of the previous
//                                 iteration, as the optimizer's payload stage calls it (W = 1)
//   encode_fresh/<plugin>/25M/t1  Compressor::encode(): a fresh payload every call
//   decode/<plugin>/25M/t1        Compressor::decode_add_() of that payload into float32
// with counters bytes_per_elem (payload.wire_bytes() / N) and x_read: the row's mean time over
// the read pass's, both timed in this run (the read pass as the fastest of 10), which is how
// the target "a single-pass quantizer compresses in <= 3x one plain read pass" is quoted.
//   philox_draws/<path>/25M/t1    the quantizers' 16-bit draws alone for 25M entries (12.5M
//                                 Philox4x32-10 words), portable, AVX2 and AVX-512 paths
//   --benchmark_filter='read_pass|encode|decode|philox'   runs only these rows.
// PowerSGD (a rounds plugin) on the study mlp's weights, [2048, 784] and [2048, 2048], ranks 2
// and 4, at world size 1 (the rounds' allreduces are no-ops), one thread:
//   rounds/powersgd:r<R>/<n>x<m>/t1      one run_rounds() with warm start, into kept buffers
//   rounds_floor/mm3:r<R>/<n>x<m>/t1     the three products alone (M·Q, Mᵀ·P, P·Qᵀ into a kept
//                                        output), as PyTorch's powerSGD_hook computes them
//   --benchmark_filter='rounds'          runs only these rows.
// Results and the command used: docs/benchmarks.md.
#include "philox_lanes.h"
#include "radix_topk_cpu.h"

#include <cddp/plugin_loader.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace {

using cddp::kernels::RadixTopK;

struct Data {
  at::Tensor x;          // N(0, 1)
  at::Tensor residual0;  // 0.1 * N(0, 1)
  at::Tensor residual;   // the fused benchmark's residual, reset from residual0 (untimed)
};

Data& data(int64_t n) {
  static std::map<int64_t, Data> cache;
  auto it = cache.find(n);
  if (it == cache.end()) {
    at::Generator gen = at::detail::createCPUGenerator(1234 + static_cast<uint64_t>(n));
    Data d;
    d.x = at::randn({n}, gen, at::kFloat);
    d.residual0 = at::randn({n}, gen, at::kFloat).mul_(0.1);
    d.residual = d.residual0.clone();
    it = cache.emplace(n, std::move(d)).first;
  }
  return it->second;
}

RadixTopK& workspace() {
  static RadixTopK s;  // reused, as the plugin does: its buffers stay allocated
  return s;
}

void finish(benchmark::State& st, int64_t n, int64_t k) {
  st.SetItemsProcessed(st.iterations() * n);
  st.counters["k"] = static_cast<double>(k);
}

void bm_radix(benchmark::State& st, int64_t n, int64_t k, bool fused) {
  Data& d = data(n);
  std::vector<float> ov(static_cast<std::size_t>(k));
  std::vector<int32_t> oi(static_cast<std::size_t>(k));
  const float* x = d.x.data_ptr<float>();
  float* r = fused ? d.residual.data_ptr<float>() : nullptr;
  RadixTopK& s = workspace();
  const float* r0 = d.residual0.data_ptr<float>();
  s.select_float(x, r, n, k, ov.data(), oi.data());  // warm the workspace
  for (auto _ : st) {
    if (fused) {  // every iteration sees the same acc = x + residual0
      st.PauseTiming();
      std::memcpy(r, r0, sizeof(float) * static_cast<std::size_t>(n));
      st.ResumeTiming();
    }
    s.select_float(x, r, n, k, ov.data(), oi.data());
    benchmark::DoNotOptimize(ov.data());
    benchmark::DoNotOptimize(oi.data());
    benchmark::ClobberMemory();
  }
  finish(st, n, k);
}

// DGC's step before sending, u ← 0.9·u + g then top-k of u + residual with error feedback:
// fused (RadixTopK::select_float_momentum, one pass over u, g and the residual) or as the chain
// ATen's u.mul_(0.9).add_(g) then select_float with the residual. u and the residual are reset,
// untimed, before every iteration; g is the data's x, u its residual0 (both are just data).
void bm_dgc_topk(benchmark::State& st, int64_t n, int64_t k, bool fused) {
  Data& d = data(n);
  std::vector<float> ov(static_cast<std::size_t>(k));
  std::vector<int32_t> oi(static_cast<std::size_t>(k));
  at::Tensor u = d.residual0.clone(), r = d.residual0.clone();
  const float* r0 = d.residual0.data_ptr<float>();
  RadixTopK& s = workspace();
  for (auto _ : st) {
    st.PauseTiming();
    std::memcpy(u.data_ptr<float>(), r0, sizeof(float) * static_cast<std::size_t>(n));
    std::memcpy(r.data_ptr<float>(), r0, sizeof(float) * static_cast<std::size_t>(n));
    st.ResumeTiming();
    if (fused) {
      s.select_float_momentum(u.data_ptr<float>(), d.x.data_ptr<float>(), 0.9f, r.data_ptr<float>(), n, k, ov.data(),
                              oi.data());
    } else {
      u.mul_(0.9).add_(d.x);
      s.select_float(u.data_ptr<float>(), r.data_ptr<float>(), n, k, ov.data(), oi.data());
    }
    benchmark::DoNotOptimize(ov.data());
    benchmark::ClobberMemory();
  }
  finish(st, n, k);
}

void bm_torch_topk(benchmark::State& st, int64_t n, int64_t k) {
  Data& d = data(n);
  for (auto _ : st) {
    auto res = at::topk(d.x.abs(), k);
    benchmark::DoNotOptimize(std::get<0>(res).data_ptr<float>());
  }
  finish(st, n, k);
}

void bm_nth_element(benchmark::State& st, int64_t n, int64_t k) {
  Data& d = data(n);
  std::vector<float> copy(static_cast<std::size_t>(n));
  const float* x = d.x.data_ptr<float>();
  for (auto _ : st) {
    for (int64_t i = 0; i < n; ++i) copy[i] = std::fabs(x[i]);
    std::nth_element(copy.begin(), copy.begin() + (k - 1), copy.end(), std::greater<float>());
    benchmark::DoNotOptimize(copy[k - 1]);
  }
  finish(st, n, k);
}

void bm_read_sum(benchmark::State& st, int64_t n, int64_t k) {
  Data& d = data(n);
  for (auto _ : st) {
    at::Tensor s = at::sum(d.x);
    benchmark::DoNotOptimize(s.data_ptr<float>());
  }
  finish(st, n, k);
}

void bm_random_k(benchmark::State& st, int64_t n, int64_t k) {
  std::vector<int32_t> oi(static_cast<std::size_t>(k));
  RadixTopK& s = workspace();
  int64_t step = 1;
  s.select_smallest_philox(42, step, 0, n, k, oi.data());
  for (auto _ : st) {
    s.select_smallest_philox(42, ++step, 0, n, k, oi.data());
    benchmark::DoNotOptimize(oi.data());
    benchmark::ClobberMemory();
  }
  finish(st, n, k);
}

// Runs `body` with the ATen thread count set, restoring it afterwards.
template <class F>
void with_threads(benchmark::State& st, int threads, F body) {
  const int old = at::get_num_threads();
  at::set_num_threads(threads);
  body(st);
  at::set_num_threads(old);
}

// ---- payload plugins ----

struct PayloadCase {
  std::string label;  // e.g. "sign:scaled"
  std::string plugin;
  cddp::ParamMap params;
};

const std::vector<PayloadCase>& payload_cases() {
  static const std::vector<PayloadCase> cases = {
      {"sign:signsgd", "sign", {{"variant", std::string("signsgd")}}},
      {"sign:scaled", "sign", {{"variant", std::string("scaled")}}},
      {"sign:onebit", "sign", {{"variant", std::string("onebit")}}},
      {"cast:fp16", "cast", {{"dtype", std::string("fp16")}}},
      {"cast:bf16", "cast", {{"dtype", std::string("bf16")}}},
      {"qsgd:s16,d512", "qsgd", {{"levels", int64_t{16}}, {"bucket_size", int64_t{512}}}},
      {"qsgd:s4,d512", "qsgd", {{"levels", int64_t{4}}, {"bucket_size", int64_t{512}}}},
      {"terngrad", "terngrad", {}},
      {"natural", "natural", {}},
  };
  return cases;
}

cddp::PluginLoader& plugin_loader() {
  static cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_BENCH_PLUGIN_DIR}, nullptr));
  return loader;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The plain read pass over x, timed here with the caller's thread count: the fastest of 10.
double read_pass_seconds(int64_t n) {
  static std::map<int64_t, double> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  Data& d = data(n);
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor s = at::sum(d.x);
    benchmark::DoNotOptimize(s.data_ptr<float>());
    best = std::min(best, seconds_since(t0));
  }
  return cache[n] = best;
}

void bm_read_pass(benchmark::State& st, int64_t n) {
  Data& d = data(n);
  const double read = read_pass_seconds(n);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    at::Tensor s = at::sum(d.x);
    benchmark::DoNotOptimize(s.data_ptr<float>());
  }
  st.SetItemsProcessed(st.iterations() * n);
  st.counters["bytes_per_elem"] = 4.0;
  st.counters["x_read"] = seconds_since(t0) / static_cast<double>(st.iterations()) / read;
}

enum class PayloadRow { EncodeInto, EncodeFresh, Decode };

void bm_payload(benchmark::State& st, const PayloadCase& pc, int64_t n, PayloadRow row) {
  Data& d = data(n);
  auto codec = plugin_loader().create(pc.plugin, pc.params);
  cddp::PluginState state;
  cddp::CompressContext ctx;
  ctx.step = 1;
  ctx.seed = 42;
  ctx.param_name = "bench";
  cddp::Payload payload = codec->encode(d.x, state, ctx);  // warm-up, and the payload to decode
  at::Tensor dense = at::zeros({n}, at::kFloat);
  const double read = read_pass_seconds(n);
  const auto t0 = std::chrono::steady_clock::now();
  cddp::Payload kept;  // what the host's payload stage hands back each step (encode_into)
  for (auto _ : st) {
    if (row == PayloadRow::Decode) {
      codec->decode_add_(payload, dense);
      benchmark::DoNotOptimize(dense.data_ptr<float>());
    } else if (row == PayloadRow::EncodeInto) {
      ++ctx.step;  // fresh draws for the stochastic ones, as in training
      codec->encode_into(d.x, state, ctx, kept);
      benchmark::DoNotOptimize(kept.parts[0].data_ptr());
    } else {
      ++ctx.step;
      cddp::Payload p = codec->encode(d.x, state, ctx);
      benchmark::DoNotOptimize(p.parts[0].data_ptr());
    }
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * n);
  st.counters["bytes_per_elem"] = static_cast<double>(payload.wire_bytes()) / static_cast<double>(n);
  st.counters["x_read"] = seconds_since(t0) / static_cast<double>(st.iterations()) / read;
}

void register_payloads() {
  const int64_t n = 25000000;
  const std::string suffix = "/" + std::to_string(n / 1000000) + "M/t1";
  auto add = [&](const std::string& name, std::function<void(benchmark::State&)> f) {
    benchmark::RegisterBenchmark(name.c_str(), [f](benchmark::State& st) { with_threads(st, 1, f); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(0.5);
  };
  add("read_pass" + suffix, [n](benchmark::State& st) { bm_read_pass(st, n); });
  for (const PayloadCase& pc : payload_cases()) {
    add("encode/" + pc.label + suffix, [&pc, n](benchmark::State& st) { bm_payload(st, pc, n, PayloadRow::EncodeInto); });
    add("encode_fresh/" + pc.label + suffix,
        [&pc, n](benchmark::State& st) { bm_payload(st, pc, n, PayloadRow::EncodeFresh); });
    add("decode/" + pc.label + suffix, [&pc, n](benchmark::State& st) { bm_payload(st, pc, n, PayloadRow::Decode); });
  }
  // The quantizers' draws alone (philox_lanes.h): n/2 32-bit words, two 16-bit draws each, on each path.
  using Fill = bool (*)(cddp::philox::Key, uint64_t, int64_t, int64_t, int, uint32_t*);
  const std::pair<const char*, Fill> paths[] = {
      {"portable",
       [](cddp::philox::Key k, uint64_t b, int64_t s, int64_t p, int n_blocks, uint32_t* out) {
         cddp::philox::fill_lanes_portable(k, b, s, p, n_blocks, out);
         return true;
       }},
      {"avx2", &cddp::philox::fill_lanes_avx2},
      {"avx512", &cddp::philox::fill_lanes_avx512}};
  for (const auto& [label, fill] : paths)
    add(std::string("philox_draws/") + label + suffix, [fill = fill, n](benchmark::State& st) {
      const double read = read_pass_seconds(n);
      uint32_t words[256];
      const auto t0 = std::chrono::steady_clock::now();
      for (auto _ : st) {
        for (int64_t b = 0; b < n / 8; b += 64) {  // 8 draws a block
          if (!fill(cddp::philox::Key{1, 2}, uint64_t(b), 3, 4, 64, words)) {
            st.SkipWithError("this CPU lacks the instructions");
            return;
          }
          benchmark::DoNotOptimize(words[0]);
        }
      }
      st.SetItemsProcessed(st.iterations() * n);
      st.counters["x_read"] = seconds_since(t0) / static_cast<double>(st.iterations()) / read;
    });
}

// ---- rounds plugins (PowerSGD) ----

// World size 1: what a round costs on one rank without the wire (the allreduces are no-ops).
class LocalRounds final : public cddp::RoundCollective {
 public:
  int world_size() const override { return 1; }
  void allreduce_sum_(at::Tensor&) override {}
};

// One run_rounds() of PowerSGD on an n×m fp32 matrix (a study mlp weight), warm start, as the
// payload stage calls it: acc in, average and approx into buffers kept between calls.
void bm_powersgd_rounds(benchmark::State& st, int64_t n, int64_t m, int64_t rank) {
  auto codec = plugin_loader().create("powersgd", {{"rank", rank}, {"start_iter", int64_t{0}}});
  at::Generator gen = at::detail::createCPUGenerator(7);
  at::Tensor acc = at::randn({n, m}, gen);
  cddp::PluginState state;
  for (const auto& spec : codec->state_specs({n, m}, at::kFloat)) state[spec.name] = at::zeros(spec.shape, at::TensorOptions(spec.dtype));
  at::Tensor average = at::empty({n * m}), approx = at::empty({n * m});
  LocalRounds coll;
  cddp::CompressContext ctx;
  ctx.param_name = "bench";
  ctx.step = 1;
  codec->run_rounds(acc, state, coll, ctx, average, approx);  // warm-up: Q drawn, then warm
  for (auto _ : st) {
    ++ctx.step;
    codec->run_rounds(acc, state, coll, ctx, average, approx);
    benchmark::DoNotOptimize(average.data_ptr<float>());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * n * m);
}

// The floor of the same math, as PyTorch's powerSGD_hook writes it: three 2-D products,
// P = M·Q, Q = Mᵀ·P, and P·Qᵀ into a kept output (no orthogonalisation, no copies).
void bm_powersgd_floor(benchmark::State& st, int64_t n, int64_t m, int64_t rank) {
  at::Generator gen = at::detail::createCPUGenerator(7);
  at::Tensor M = at::randn({n, m}, gen), q = at::randn({m, rank}, gen), out = at::empty({n, m});
  for (auto _ : st) {
    at::Tensor p = at::mm(M, q);
    at::Tensor q_next = at::mm(M.t(), p);
    at::mm_out(out, p, q_next.t());
    benchmark::DoNotOptimize(out.data_ptr<float>());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * n * m);
}

void register_rounds() {
  auto add = [&](const std::string& name, std::function<void(benchmark::State&)> f) {
    benchmark::RegisterBenchmark(name.c_str(), [f](benchmark::State& st) { with_threads(st, 1, f); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(0.5);
  };
  // The study mlp's two large weights, [2048, 784] and [2048, 2048], at ranks 2 and 4.
  for (const auto& [n, m] : {std::pair<int64_t, int64_t>{2048, 784}, {2048, 2048}})
    for (int64_t r : {2, 4}) {
      const std::string shape = "/" + std::to_string(n) + "x" + std::to_string(m) + "/t1";
      add("rounds/powersgd:r" + std::to_string(r) + shape,
          [n = n, m = m, r](benchmark::State& st) { bm_powersgd_rounds(st, n, m, r); });
      add("rounds_floor/mm3:r" + std::to_string(r) + shape,
          [n = n, m = m, r](benchmark::State& st) { bm_powersgd_floor(st, n, m, r); });
    }
}

std::string n_name(int64_t n) {
  return n % 1000000 == 0 ? std::to_string(n / 1000000) + "M" : std::to_string(n);
}

void register_all(bool large) {
  std::vector<int64_t> sizes{1000000, 25000000};
  if (large) sizes.push_back(100000000);
  const std::pair<const char*, double> densities[] = {{"10%", 0.1}, {"1%", 0.01}, {"0.1%", 0.001}};
  for (int64_t n : sizes) {
    for (const auto& [dname, dens] : densities) {
      const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(dens * n)));
      for (int threads : {1, 2}) {
        const std::string suffix =
            "/" + n_name(n) + "/" + dname + "/t" + std::to_string(threads);
        auto add = [&](const std::string& name, std::function<void(benchmark::State&)> f) {
          benchmark::RegisterBenchmark(
              (name + suffix).c_str(),
              [threads, f](benchmark::State& st) { with_threads(st, threads, f); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime()
              ->MinTime(0.3);
        };
        add("radix_topk", [n, k](benchmark::State& st) { bm_radix(st, n, k, false); });
        add("radix_topk_ef", [n, k](benchmark::State& st) { bm_radix(st, n, k, true); });
        add("dgc_topk_chain", [n, k](benchmark::State& st) { bm_dgc_topk(st, n, k, false); });
        add("dgc_topk_fused", [n, k](benchmark::State& st) { bm_dgc_topk(st, n, k, true); });
        add("torch_topk", [n, k](benchmark::State& st) { bm_torch_topk(st, n, k); });
        if (threads == 1) {
          add("nth_element", [n, k](benchmark::State& st) { bm_nth_element(st, n, k); });
        }
        add("read_sum", [n, k](benchmark::State& st) { bm_read_sum(st, n, k); });
        add("random_k", [n, k](benchmark::State& st) { bm_random_k(st, n, k); });
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool large = false;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cddp_large") == 0) {
      large = true;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  register_all(large);
  register_payloads();
  register_rounds();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("blas", "libopenblas0-openmp (not used by these kernels)");
  benchmark::AddCustomContext("aten_parallel", at::get_parallel_info());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
