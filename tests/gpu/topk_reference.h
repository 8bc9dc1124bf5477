// topk_reference.h — plain CPU references for the CUDA top-k and random-k selections, shared by
// topk_cuda_test.cpp (real GPU) and topk_kernels_emu_test.cpp (kernels emulated on the CPU).
// The rule (the CPU plugins'): top-k takes the k largest |acc| (key = bits & 0x7fffffff, so +0
// and -0 tie), random-k the k smallest Philox priorities; ties go to the lower index; output
// sorted by index ascending; values are acc with its sign.
#pragma once

#include "philox.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

namespace cddp::testing {

inline uint32_t mag_key(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b & 0x7fffffffu;
}

// Indices of the k largest keys (ties: lower index), ascending. Larger key wins.
inline std::vector<int64_t> k_largest(const std::vector<uint32_t>& key, int64_t k) {
  std::vector<int64_t> order(key.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  auto better = [&](int64_t a, int64_t b) { return key[a] != key[b] ? key[a] > key[b] : a < b; };
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), better);
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

struct TopkRef {
  std::vector<float> values;
  std::vector<int64_t> indices;
  std::vector<float> residual_after;  // acc with the selected positions set to +0.0f
  std::vector<float> acc;
};

// acc = grad + residual (fp32, one rounding), or grad when residual is empty.
inline TopkRef topk_reference(const std::vector<float>& grad, const std::vector<float>& residual,
                              int64_t k) {
  TopkRef r;
  const size_t n = grad.size();
  r.acc.resize(n);
  for (size_t i = 0; i < n; ++i) {
    volatile float s = residual.empty() ? grad[i] : grad[i] + residual[i];
    r.acc[i] = s;
  }
  std::vector<uint32_t> key(n);
  for (size_t i = 0; i < n; ++i) key[i] = mag_key(r.acc[i]);
  r.indices = k_largest(key, k);
  r.values.reserve(k);
  for (int64_t i : r.indices) r.values.push_back(r.acc[i]);
  r.residual_after = r.acc;
  for (int64_t i : r.indices) r.residual_after[i] = 0.0f;
  return r;
}

inline uint32_t randomk_priority(uint64_t seed, int64_t step, int64_t param_index, int64_t i) {
  const philox::Block b = philox::philox4x32_10(
      philox::randomk_counter(static_cast<uint64_t>(i / 4), step, param_index),
      philox::randomk_key(seed));
  return b.c[i % 4];
}

inline std::vector<int64_t> randomk_reference(uint64_t seed, int64_t step, int64_t param_index,
                                              int64_t n, int64_t k) {
  std::vector<uint32_t> key(n);
  for (int64_t i = 0; i < n; ++i) key[i] = ~randomk_priority(seed, step, param_index, i);
  return k_largest(key, k);  // largest ~priority == smallest priority
}

inline bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace cddp::testing
