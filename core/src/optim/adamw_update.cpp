// adamw_update.cpp — CompressedAdamW's momentum to send and its update (adamw_update.h).
#include "adamw_update.h"

#include <ATen/ATen.h>

#include <cmath>

namespace cddp::detail {

void init_moments(AdamWTensor& a) {
  CompressedAdamWParamState& s = *a.state;
  const at::Tensor& p = a.t->p;
  if (!s.exp_avg().defined()) s.exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
  if (!s.exp_avg_sq().defined()) s.exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
  if (a.opt->amsgrad() && !s.max_exp_avg_sq().defined()) s.max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
}

void momentum_to_send(AdamWTensor& a) {
  CompressedAdamWParamState& s = *a.state;
  TORCH_INTERNAL_ASSERT(s.step() > 0, "parameter '", a.t->name, "' has no AdamW step to freeze the variance of");
  if (s.variance_frozen_at() == 0) s.variance_frozen_at(s.step());
  const double beta1 = std::get<0>(a.opt->betas());
  // m_local = β1·m + (1 − β1)·g, in a new tensor: m itself changes only to the exchanged mean.
  a.t->g = s.exp_avg().mul(beta1).add_(a.t->g, 1 - beta1);
  a.momentum_sent = true;
}

namespace {

// √v / √(1 − β2^T) + ε, with T the step the bias correction is taken at.
at::Tensor denominator(const AdamWTensor& a, int64_t bias_step) {
  const CompressedAdamWParamState& s = *a.state;
  const double bias_correction2 = 1 - std::pow(std::get<1>(a.opt->betas()), double(bias_step));
  const at::Tensor& v = a.opt->amsgrad() ? s.max_exp_avg_sq() : s.exp_avg_sq();
  return (v.sqrt() / std::sqrt(bias_correction2)).add_(a.opt->eps());
}

void update_one(AdamWTensor& a) {
  const CompressedAdamWOptions& o = *a.opt;
  CompressedAdamWParamState& s = *a.state;
  at::Tensor p = a.t->p.data();
  const at::Tensor d = a.t->average.view(p.sizes());
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  s.step(s.step() + 1);
  if (o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());  // decoupled weight decay
  const bool frozen = s.variance_frozen_at() > 0;
  if (a.momentum_sent) {
    s.exp_avg().copy_(d);  // the mean of every rank's m_local: identical on every rank
  } else {
    s.exp_avg().mul_(beta1).add_(d, 1 - beta1);
    if (!frozen) s.exp_avg_sq().mul_(beta2).addcmul_(d, d, 1 - beta2);
    if (!frozen && o.amsgrad()) at::max_out(s.max_exp_avg_sq(), s.exp_avg_sq(), s.max_exp_avg_sq());
  }
  const at::Tensor denom = denominator(a, frozen ? s.variance_frozen_at() : s.step());
  const double bias_correction1 = 1 - std::pow(beta1, double(s.step()));
  p.addcdiv_(s.exp_avg(), denom, -(o.lr() / bias_correction1));
}

}  // namespace

void apply_adamw_updates(std::vector<AdamWTensor>& tensors) {
  for (AdamWTensor& a : tensors) update_one(a);
}

}  // namespace cddp::detail
