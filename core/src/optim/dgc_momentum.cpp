// dgc_momentum.cpp — DGC momentum correction and factor masking (dgc_momentum.h; Lin et al. 2018).
#include "dgc_momentum.h"

#include <ATen/ATen.h>

namespace cddp::detail {

at::Tensor& velocity_of(TensorStep& t) {
  if (!t.state->momentum_buffer().defined()) t.state->momentum_buffer(at::zeros_like(t.p, at::MemoryFormat::Contiguous));
  return t.state->momentum_buffer();
}

bool velocity_update_fuses(const TensorStep& t) {
  return t.momentum_before_compression() && t.error_feedback && !t.opt->nesterov();
}

at::Tensor momentum_corrected_gradient(TensorStep& t) {
  if (!t.momentum_before_compression()) return t.g;
  const auto& o = *t.opt;
  at::Tensor& u = velocity_of(t);
  u.mul_(o.momentum()).add_(t.g);                     // u_t = m·u_{t−1} + g_t
  return o.nesterov() ? t.g.add(u, o.momentum()) : u;  // Nesterov: m·u_t + g_t
}

void mask_momentum_of_sent(TensorStep& t) {
  if (!t.momentum_before_compression() || t.sent.count() == 0) return;
  t.state->momentum_buffer().view(-1).index_fill_(0, t.sent.indices.to(at::kLong), 0);  // u ⊙ ¬mask
}

}  // namespace cddp::detail
