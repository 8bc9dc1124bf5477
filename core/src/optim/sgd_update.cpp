// sgd_update.cpp — p −= lr·d_p, with SGD's momentum where it was not applied before
// compression (sgd_update.h).
#include "sgd_update.h"

#include <ATen/ATen.h>

namespace cddp::detail {

void apply_sgd_updates(std::vector<TensorStep>& tensors) {
  for (auto& t : tensors) {
    const auto& o = *t.opt;
    if (t.coalesced) {  // the mean as a list of the entries any rank sent
      TORCH_INTERNAL_ASSERT(t.coalesced->valid, "the exchange did not coalesce '", t.name, "'");
      add_sparse_(t.p.data(), *t.coalesced, -o.lr());
      continue;
    }
    at::Tensor d_p = t.average.view(t.p.sizes());
    if (o.momentum() != 0 && !t.momentum_before_compression()) {
      at::Tensor buf = t.state->momentum_buffer();
      if (!buf.defined()) {
        buf = at::clone(d_p).detach();
        t.state->momentum_buffer(buf);
      } else {
        buf.mul_(o.momentum()).add_(d_p, 1 - o.dampening());
      }
      d_p = o.nesterov() ? d_p.add(buf, o.momentum()) : buf;
    }
    t.p.data().add_(d_p, -1 * o.lr());
  }
}

}  // namespace cddp::detail
