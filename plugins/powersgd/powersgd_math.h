// powersgd_math.h — the shape rules and the seed of PowerSGD (Vogels, Karimireddy and Jaggi,
// NeurIPS 2019, "PowerSGD: Practical Low-Rank Gradient Compression for Distributed
// Optimization"), as small inline functions that the plugin and its tests share.
//
//   view:      a tensor of shape [d0, d1, ..., dk] is the matrix M [d0, d1·…·dk] (PyTorch's
//              powerSGD_hook: tensor.view(shape[0], -1)); 1-D tensors are not matrices.
//   rank:      r = min(rows, cols, rank), as the hook clamps it.
//   compress:  (rows + cols)·r·min_compression_rate < rows·cols (the hook's _should_compress);
//              otherwise the tensor is allreduced as it is.
//   q_seed:    the seed of the generator that draws the initial Q [cols, r] of parameter
//              `param_index` at optimizer step `step` of a run seeded `run_seed`: identical on
//              every rank, independent of the global RNG. PyTorch's CPU generator (mt19937)
//              keeps only the low 32 bits of a seed, so the value is one in [0, 2^32).
//
// Header-only; it will not allocate, draw or communicate.
#pragma once

#include <cstdint>
#include <vector>

namespace cddp::powersgd {

struct MatrixPlan {
  bool matrix = false;    // at least 2-D and not empty
  bool compress = false;  // low rank pays by min_compression_rate
  int64_t rows = 0, cols = 0, rank = 0;
};

inline MatrixPlan plan_for(const std::vector<int64_t>& shape, int64_t rank, double min_compression_rate) {
  MatrixPlan p;
  if (shape.size() < 2) return p;
  int64_t cols = 1;
  for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  if (shape[0] <= 0 || cols <= 0) return p;
  p.matrix = true;
  p.rows = shape[0];
  p.cols = cols;
  p.rank = rank < p.rows ? rank : p.rows;
  if (p.cols < p.rank) p.rank = p.cols;
  const double uncompressed = double(p.rows) * double(p.cols);
  const double compressed = double(p.rows + p.cols) * double(p.rank);
  p.compress = compressed * min_compression_rate < uncompressed;
  return p;
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint64_t q_seed(uint64_t run_seed, int64_t param_index, int64_t step) {
  uint64_t h = splitmix64(run_seed ^ 0x506F776572534744ull);  // "PowerSGD": a stream of its own
  h = splitmix64(h ^ static_cast<uint64_t>(param_index));
  h = splitmix64(h ^ static_cast<uint64_t>(step));
  return h & 0xFFFFFFFFull;
}

}  // namespace cddp::powersgd
