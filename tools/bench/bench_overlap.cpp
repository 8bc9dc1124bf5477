// bench_overlap.cpp — CompressedSGD's step with the exchange overlapping backward against the
// serial step, side by side in one run, W ranks over Gloo on loopback.
//
//   bench_overlap [--nproc 4] [--iters 30] [--batch 64] [--ratio 0.01] [--bucket-mb 25]
//
// Started without RANK in the environment it re-executes itself on --nproc local ranks through
// cddp::launch_local. Each rank holds two copies of the study's mlp (784-2048-2048-10, 5.8M
// parameters, raw tensors) and two optimizers, top-k at --ratio with error feedback, DGC
// momentum 0.9 and min_numel 32768 (cddp-train's defaults): one with overlap = false, one with
// overlap = true. Iterations alternate serial, overlapped, so both see the same machine load;
// each times forward + backward + step() on a fixed random batch. Rank 0 prints the median
// and the ratio; one warm-up iteration each is not counted. Plain timing, not Google Benchmark.
//
// It will not check results (tests/core/overlapped_step_test and tests/dist do), and it reads the
// environment only in main().
#include <cddp/compressed_sgd.h>
#include <cddp/launcher.h>
#include <cddp/plugin_loader.h>
#include <cddp/rendezvous.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct Opts {
  int nproc = 4, iters = 30, batch = 64;
  double ratio = 0.01, bucket_mb = 25;
};

// The study mlp: 784 → 2048 → 2048 → 10, ReLU.
struct Mlp {
  std::vector<std::pair<std::string, at::Tensor>> params;
  Mlp() {
    auto g = at::make_generator<at::CPUGeneratorImpl>(1);
    const int64_t sizes[] = {784, 2048, 2048, 10};
    for (int l = 0; l < 3; ++l) {
      const std::string n = "fc" + std::to_string(l + 1);
      params.emplace_back(n + ".weight", (at::randn({sizes[l + 1], sizes[l]}, g) * 0.02).set_requires_grad(true));
      params.emplace_back(n + ".bias", at::zeros({sizes[l + 1]}).set_requires_grad(true));
    }
  }
  at::Tensor loss(const at::Tensor& x, const at::Tensor& y) const {
    at::Tensor h = x;
    for (size_t l = 0; l < 3; ++l) {
      h = at::linear(h, params[2 * l].second, params[2 * l + 1].second);
      if (l < 2) h = at::relu(h);
    }
    return at::cross_entropy_loss(h, y);
  }
};

int run_rank(const Opts& o, const cddp::EnvMap& env) {
  cddp::DistEnv d = cddp::parse_dist_env(env);
  std::shared_ptr<cddp::Communicator> comm = cddp::connect(d, std::chrono::seconds(120));
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_BENCH_PLUGIN_DIR}, nullptr));
  Mlp serial_model, overlap_model;
  auto options = [&](bool overlap) {
    return cddp::CompressedSGDOptions(0.01)
        .momentum(0.9)
        .compressor(loader.create("topk", {{"ratio", o.ratio}}))
        .density(o.ratio)
        .min_numel(32768)
        .communicator(comm)
        .overlap(overlap)
        .bucket_cap_mb(o.bucket_mb);
  };
  cddp::CompressedSGD serial(serial_model.params, options(false));
  cddp::CompressedSGD overlapped(overlap_model.params, options(true));
  auto g = at::make_generator<at::CPUGeneratorImpl>(100 + comm->rank());
  const at::Tensor x = at::randn({o.batch, 784}, g), y = at::randint(0, 10, {o.batch}, g);
  std::vector<double> t_serial, t_overlap, wait_serial, wait_overlap;
  auto one = [&](Mlp& m, cddp::CompressedSGD& opt, std::vector<double>& total, std::vector<double>& tail) {
    comm->barrier();  // every rank starts the iteration together
    opt.zero_grad();
    const auto t0 = Clock::now();
    m.loss(x, y).backward();
    const auto t1 = Clock::now();
    opt.step();
    total.push_back(ms_since(t0));
    tail.push_back(ms_since(t1));
  };
  for (int i = 0; i <= o.iters; ++i) {
    one(serial_model, serial, t_serial, wait_serial);
    one(overlap_model, overlapped, t_overlap, wait_overlap);
    if (i == 0) t_serial.clear(), t_overlap.clear(), wait_serial.clear(), wait_overlap.clear();
  }
  if (comm->rank() == 0) {
    std::printf("| W | overlap | buckets | median ms (fwd+bwd+step) | median ms in step() |\n|---|---|---|---|---|\n");
    std::printf("| %d | false | - | %.1f | %.1f |\n", comm->world_size(), median(t_serial), median(wait_serial));
    std::printf("| %d | true | %zu | %.1f | %.1f |\n", comm->world_size(), overlapped.overlap_bucket_count(),
                median(t_overlap), median(wait_overlap));
    std::printf("overlap/serial: %.3f (median over %d iterations each, alternating)\n",
                median(t_overlap) / median(t_serial), o.iters);
  }
  comm->barrier();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  bool worker = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    try {
      if (a == "--nproc" && has_value) o.nproc = std::stoi(argv[++i]);
      else if (a == "--iters" && has_value) o.iters = std::stoi(argv[++i]);
      else if (a == "--batch" && has_value) o.batch = std::stoi(argv[++i]);
      else if (a == "--ratio" && has_value) o.ratio = std::stod(argv[++i]);
      else if (a == "--bucket-mb" && has_value) o.bucket_mb = std::stod(argv[++i]);
      else if (a == "--worker") worker = true;
      else {
        std::fprintf(stderr, "usage: bench_overlap [--nproc W] [--iters I] [--batch B] [--ratio R] [--bucket-mb M]\n");
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "bench_overlap: bad value for %s\n", a.c_str());
      return 2;
    }
  }
  if (o.nproc < 2 || o.iters < 1 || o.batch < 1 || !(o.ratio > 0 && o.ratio <= 1) || !(o.bucket_mb > 0)) {
    std::fprintf(stderr, "bench_overlap: need --nproc >= 2, --iters >= 1, --batch >= 1, 0 < --ratio <= 1, --bucket-mb > 0\n");
    return 2;
  }
  const cddp::EnvMap env = cddp::environment_map(environ);
  try {
    if (worker) return run_rank(o, env);
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      std::fprintf(stderr, "bench_overlap: cannot find its own executable\n");
      return 1;
    }
    self[n] = '\0';
    cddp::LaunchOptions lo;
    lo.nproc = o.nproc;
    lo.argv = {self,      "--worker", "--iters", std::to_string(o.iters), "--batch", std::to_string(o.batch), "--ratio",
               std::to_string(o.ratio), "--bucket-mb", std::to_string(o.bucket_mb)};
    lo.env = env;
    lo.on_line = [](int rank, int stream, const std::string& line) {
      if (rank == 0 && stream == 1) std::printf("%s\n", line.c_str());
      else std::fprintf(stderr, "[rank %d] %s\n", rank, line.c_str());
      std::fflush(stdout);
    };
    return cddp::launch_local(lo);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "bench_overlap: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_overlap: %s\n", e.what());
  }
  return 1;
}
