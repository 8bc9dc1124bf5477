// error_feedback.cpp — the residual e of error feedback (error_feedback.h).
#include "error_feedback.h"

#include <ATen/ATen.h>

#include <cmath>

namespace cddp::detail {

at::Tensor& residual_of(TensorStep& t) {
  if (!t.memory->residual().defined()) t.memory->residual(at::zeros_like(t.p, at::MemoryFormat::Contiguous));
  return t.memory->residual();
}

Compressed compress_with_error_feedback(TensorStep& t, const at::Tensor& source, const CompressContext& ctx) {
  if (!t.error_feedback) return t.compressor->compress(source, ctx);
  at::Tensor residual = residual_of(t);                           // e_{t−1}, updated in place to
  return t.compressor->compress_with_feedback(source, residual, ctx);  // e_t = acc − D(C(acc))
}

Compressed compress_velocity_with_error_feedback(TensorStep& t, at::Tensor& velocity, double momentum,
                                                 const CompressContext& ctx) {
  at::Tensor residual = residual_of(t);  // v_{t−1} += m·u_{t−1} + g_t, then v_t = acc − D(C(acc))
  return t.compressor->compress_with_momentum_feedback(t.g, velocity, momentum, residual, ctx);
}

at::Tensor accumulate_for_payload(TensorStep& t, const at::Tensor& source) {
  if (!t.error_feedback) return source.reshape(t.p.sizes()).contiguous();
  return source.reshape(t.p.sizes()) + residual_of(t);  // acc = source + e_{t−1}
}

void keep_residual(TensorStep& t, const at::Tensor& acc, const at::Tensor& decoded) {
  if (!t.error_feedback) return;
  at::sub_out(residual_of(t), acc, decoded.view(t.p.sizes()));  // e_t = acc − D
}

void rescale_residuals_to_lr(std::vector<TensorStep>& tensors) {
  for (auto& t : tensors) {
    if (t.route == Route::Dense || !t.error_feedback || !t.knobs.residual_lr_scaling) continue;
    CompressionMemory& s = *t.memory;
    const double lr = t.knobs.lr;
    if (lr <= 0) continue;
    if (s.residual().defined() && s.residual_lr() > 0 && s.residual_lr() != lr) s.residual().mul_(s.residual_lr() / lr);
    s.residual_lr(lr);
  }
}

at::Tensor concat_residuals(const std::vector<TensorStep*>& parts) {
  std::vector<at::Tensor> rs;
  for (TensorStep* t : parts) rs.push_back(residual_of(*t).view(-1));
  return at::cat(rs);
}

void scatter_residuals(const at::Tensor& whole, const std::vector<TensorStep*>& parts) {
  int64_t off = 0;
  for (TensorStep* t : parts) {
    t->memory->residual().view(-1).copy_(whole.narrow(0, off, t->p.numel()));
    off += t->p.numel();
  }
}

double residual_norm(const std::vector<TensorStep>& tensors) {
  double sq = 0;
  for (const auto& t : tensors)
    if (t.memory->residual().defined()) sq += t.memory->residual().to(at::kDouble).pow(2).sum().item<double>();
  return std::sqrt(sq);
}

}  // namespace cddp::detail
