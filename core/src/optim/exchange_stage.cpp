// exchange_stage.cpp — asking GradientExchange for each tensor's average (exchange_stage.h).
#include "exchange_stage.h"

#include "error_feedback.h"

#include <ATen/ATen.h>

#include <vector>

namespace cddp::detail {
namespace {

// The sparse apply (sgd_update.cpp) needs a plain CPU parameter and an update that is the
// average itself: momentum already applied locally (DGC) and no whole-model split. The exchange
// then coalesces CPU float/double selections; the parameter's dtype must match.
bool applies_sparsely(const TensorStep& t, bool model_used) {
  const auto dtype = t.p.scalar_type();
  return t.momentum_mode == MomentumMode::Dgc && !model_used && t.p.is_cpu() && t.p.is_contiguous() &&
         (dtype == at::kFloat || dtype == at::kDouble) && t.sent.dtype == dtype;
}

std::vector<SparseRequest> requests_for(const std::vector<TensorStep*>& tensors, bool model_used) {
  std::vector<SparseRequest> requests;
  for (const TensorStep* t : tensors) {
    SparseRequest r;
    r.key = t->name;
    r.local = &t->sent;
    r.codec = t->compressor.get();
    // Fixed-k compressors at a density every rank shares select the same number of entries
    // everywhere: the exchange can skip gathering the counts.
    if (t->compressor->default_density() > 0 && t->density > 0) r.expected_count = k_for_ratio(t->density, t->sent.numel);
    r.coalesce = applies_sparsely(*t, model_used);
    requests.push_back(std::move(r));
  }
  return requests;
}

// What the exchange did not deliver of this rank's selection — its values' rounding to a 16-bit
// wire type, the entries a sparse allreduce's re-selection dropped — goes back into the residual:
// e += returned, entries [offset, offset + numel) of the list only (the whole-model selection's
// list spans its parts). Where e is +0 (a top-k selection's own entries) the add is exact.
void return_to_residual(TensorStep& t, const SparseAverage& back, int64_t offset) {
  if (back.count() == 0 || !t.error_feedback) return;  // without error feedback nothing is kept anyway
  at::Tensor idx = back.indices.to(at::kLong), vals = back.values;
  const int64_t n = t.p.numel();
  if (offset != 0 || back.numel != n) {
    at::Tensor in = (idx >= offset).logical_and_(idx < offset + n).nonzero().reshape(-1);
    if (in.numel() == 0) return;
    idx = idx.index_select(0, in) - offset;
    vals = vals.index_select(0, in);
  }
  at::Tensor& e = residual_of(t);
  e.view(-1).index_add_(0, idx, vals.to(e.scalar_type()));
}

void take_averages(const std::vector<TensorStep*>& tensors, const std::vector<const AverageOf*>& averages) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (averages[i]->is_coalesced()) tensors[i]->coalesced = &averages[i]->list();
    else tensors[i]->average = averages[i]->dense();
  }
}

}  // namespace

void decide_exchange_once(const RoutedTensors& routed, GradientExchange& exchange, int world, bool& decided,
                          std::string& why) {
  if (decided || routed.sparse.empty() || world <= 1) return;
  std::vector<int64_t> counts, numels;
  for (const TensorStep* t : routed.sparse) counts.push_back(t->sent.count()), numels.push_back(t->sent.numel);
  why = exchange.choose_algorithm(counts, numels);
  decided = true;
}

void exchange_averages(RoutedTensors& routed, ModelSelection& model, GradientExchange& exchange, int world,
                       StepStats& st) {
  const std::vector<const AverageOf*> sparse = exchange.average_sparse(requests_for(routed.sparse, model.used()), st);
  take_averages(routed.sparse, sparse);
  if (model.used()) {  // the whole-model residual was already split into the parts' own
    int64_t off = 0;
    for (TensorStep* part : model.parts) {
      return_to_residual(*part, sparse[0]->returned(), off);
      off += part->p.numel();
    }
  } else {
    for (size_t i = 0; i < routed.sparse.size(); ++i) return_to_residual(*routed.sparse[i], sparse[i]->returned(), 0);
  }
  take_averages(routed.shared, exchange.average_shared(requests_for(routed.shared, model.used()), st));
  std::vector<at::Tensor> dense_grads;
  for (TensorStep* t : routed.dense) {
    // Averaged in place: never in the user's .grad itself.
    if (world > 1 && t->g.is_alias_of(t->p.grad())) t->g = t->g.clone();  // .data() is a new TensorImpl: compare storage
    dense_grads.push_back(t->g);
  }
  exchange.average_dense(dense_grads, st);
  for (size_t i = 0; i < routed.dense.size(); ++i) routed.dense[i]->average = dense_grads[i];
  if (model.used()) split_model_average(model);
}

}  // namespace cddp::detail
