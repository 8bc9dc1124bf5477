// dist_common.h — the model, data and loss that both the multi-process worker (dist_worker)
// and the single-process references in the tests use, so that both compute bit-identical
// per-rank gradients. A 2-layer MLP made of raw tensors; data seeded by (rank, step).
//
// It will not train, communicate or compare: the worker and the tests do that.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace cddp::disttest {

constexpr int64_t kIn = 32, kHidden = 64, kOut = 8, kBatch = 16;

inline at::Generator generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

// w1 [64, 32], b1 [64], w2 [8, 64], b2 [8]; every value depends on `seed` only.
inline std::vector<std::pair<std::string, at::Tensor>> make_params(uint64_t seed) {
  at::Generator g = generator(seed);
  std::vector<std::pair<std::string, at::Tensor>> p;
  p.emplace_back("w1", at::randn({kHidden, kIn}, g) * 0.2);
  p.emplace_back("b1", at::randn({kHidden}, g) * 0.1);
  p.emplace_back("w2", at::randn({kOut, kHidden}, g) * 0.2);
  p.emplace_back("b2", at::randn({kOut}, g) * 0.1);
  for (auto& [name, t] : p) t.set_requires_grad(true);
  return p;
}

// Rank `rank`'s batch at `step` (1-based); different on every rank.
struct Batch {
  at::Tensor x, y;
};
inline Batch make_batch(int rank, int64_t step, int64_t batch = kBatch) {
  at::Generator g = generator(1000003ull * static_cast<uint64_t>(rank + 1) + static_cast<uint64_t>(step));
  Batch b;
  b.x = at::randn({batch, kIn}, g);
  b.y = at::randn({batch, kOut}, g);
  return b;
}

inline at::Tensor loss_of(const std::vector<at::Tensor>& p, const Batch& b) {
  at::Tensor h = at::tanh(at::addmm(p[1], b.x, p[0].t()));
  at::Tensor out = at::addmm(p[3], h, p[2].t());
  return (out - b.y).pow(2).mean();
}

// Gradients of the loss at `params` (left untouched) on `b`.
inline std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& params, const Batch& b) {
  std::vector<at::Tensor> leaves;
  for (const auto& t : params) leaves.push_back(t.detach().clone().set_requires_grad(true));
  at::Tensor loss = loss_of(leaves, b);
  return torch::autograd::grad({loss}, leaves);
}

inline std::vector<at::Tensor> tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : named) out.push_back(t);
  return out;
}

}  // namespace cddp::disttest
