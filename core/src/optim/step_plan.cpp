// step_plan.cpp — collecting the step's gradients, resolving rules, routing (step_plan.h).
#include "step_plan.h"

#include "../exchange/wire_cost.h"

#include <ATen/ATen.h>

namespace cddp {

bool glob_match(const std::string& pattern, const std::string& text) {
  size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

const char* route_name(Route r) {
  switch (r) {
    case Route::Sparse: return "sparse-allgather";
    case Route::SharedIndices: return "shared-indices-allreduce";
    case Route::Dense: return "dense-allreduce";
    case Route::Gather: return "gather-allgather";
    case Route::Sum: return "sum-allreduce";
    case Route::Rounds: return "rounds-allreduce";
  }
  return "?";
}

namespace detail {
namespace {

// The group's compressor, density and error feedback, then every matching rule in order. A
// rule's compressor brings its own default density unless a density is configured (by the
// group or set_density); a rule's density yields to set_density.
void resolve_compression(TensorStep& t, const CompressionKnobs& o, double density_override) {
  t.compressor = o.compressor;
  t.density = density_override > 0 ? density_override : o.density;
  if (t.density <= 0 && t.compressor) t.density = t.compressor->default_density();
  t.error_feedback = o.error_feedback;
  if (!o.rules) return;
  for (const auto& rule : *o.rules) {
    if (!glob_match(rule.match, t.name)) continue;
    if (rule.compressor) {
      t.compressor = rule.compressor;
      if (density_override <= 0 && o.density <= 0) t.density = rule.compressor->default_density();
    }
    if (rule.density > 0 && density_override <= 0) t.density = rule.density;
    if (rule.error_feedback >= 0) t.error_feedback = rule.error_feedback == 1;
    if (rule.dense) t.forced_dense = true;
  }
}

// A codec that is not a selection travels by its payload kind. With auto_dense, dense when the
// plugin's cost model says its exchange moves at least as many bytes as a dense one.
Route payload_route(const TensorStep& t, const PluginCaps& caps, int world, std::string& reason) {
  const Route r = caps.kind == PayloadKind::Gather ? Route::Gather : caps.kind == PayloadKind::Sum ? Route::Sum
                                                                                                   : Route::Rounds;
  const int64_t wire = t.compressor->wire_bytes(t.p.sizes().vec(), t.p.scalar_type(), t.density);
  if (t.knobs.auto_dense && wire >= 0) {
    const double value_bytes = double(c10::elementSize(t.p.scalar_type()));
    const double dense = dense_exchange_bytes(t.p.numel(), int64_t(value_bytes), world);
    // Gather receives every other rank's payload; sum and rounds allreduce theirs (ring).
    const double mine = r == Route::Gather ? (world > 1 ? double(world - 1) * double(wire) : double(wire))
                                           : dense_exchange_bytes(wire, 1, world);
    if (mine >= dense) {
      reason = std::string(payload_kind_name(caps.kind)) + " bytes " + std::to_string(int64_t(mine)) +
               " >= dense bytes " + std::to_string(int64_t(dense));
      return Route::Dense;
    }
  }
  reason = std::string(payload_kind_name(caps.kind)) + " payload" +
           (wire >= 0 ? ", " + std::to_string(wire) + " bytes a rank" : "");
  return r;
}

}  // namespace

CompressContext context_for(const TensorStep& t, int64_t step, int world) {
  CompressContext ctx;
  ctx.step = step;
  ctx.param_index = t.index;
  ctx.param_name = t.name;
  ctx.seed = static_cast<uint64_t>(t.knobs.seed);
  ctx.ratio = t.density;
  ctx.world_size = world;
  return ctx;
}

TensorStep plan_tensor(const at::Tensor& p, int64_t index, size_t group, const std::vector<std::string>& names,
                       const CompressionKnobs& knobs, double density_override) {
  TensorStep t;
  t.p = p;
  t.index = index;
  t.group = group;
  t.name = index < int64_t(names.size()) ? names[index] : "param" + std::to_string(index);
  t.knobs = knobs;
  t.g = p.grad().data();
  resolve_compression(t, knobs, density_override);
  return t;
}

std::vector<TensorStep> collect_gradients(std::vector<torch::optim::OptimizerParamGroup>& groups,
                                          const StepSettings& settings, const std::vector<std::string>& names,
                                          double density_override, const std::vector<char>* only) {
  std::vector<TensorStep> tensors;
  int64_t flat_index = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& o = static_cast<const CompressedSGDOptions&>(groups[gi].options());
    CompressionKnobs knobs = knobs_of(o);
    knobs.residual_lr_scaling = o.residual_lr_scaling();
    for (auto& p : groups[gi].params()) {
      const int64_t index = flat_index++;
      if (only && !(*only)[size_t(index)]) continue;
      if (!p.grad().defined()) continue;
      TensorStep t = plan_tensor(p, index, gi, names, knobs, density_override);
      t.opt = &o;
      t.momentum_mode = settings.momentum_mode[gi];
      if (o.weight_decay() != 0) t.g = t.g.add(p.data(), o.weight_decay());
      tensors.push_back(std::move(t));
    }
  }
  return tensors;
}

Route route_for(const TensorStep& t, int world, IndexCoding coding, std::string& reason) {
  const CompressionKnobs& o = t.knobs;
  if (!t.compressor) return reason = "no compressor", Route::Dense;
  if (t.forced_dense)
    return reason = t.forced_dense_reason.empty() ? "a rule marks it dense" : t.forced_dense_reason, Route::Dense;
  if (t.p.numel() < o.min_numel)
    return reason = "numel " + std::to_string(t.p.numel()) + " < min_numel " + std::to_string(o.min_numel),
           Route::Dense;
  if (!o.compress_1d && t.p.dim() <= 1) return reason = "1-D tensor (bias/norm)", Route::Dense;
  const PluginCaps caps = t.compressor->caps();
  if (!caps.selection) return payload_route(t, caps, world, reason);
  const bool shared = t.compressor->shared_indices();
  // With 4-byte values and plain 4-byte indices the sparse allgather wins iff W·density < 1;
  // with Block16 indices (≈ 2 bytes) iff W·density < 4/3, about. Shared indices allreduce
  // only k values, so they win whenever density < 1 (wire_cost.h).
  if (o.auto_dense && t.density > 0) {
    const int64_t k = k_for_ratio(t.density, t.p.numel());
    const int64_t value_bytes = int64_t(c10::elementSize(t.p.scalar_type()));
    const double sparse = sparse_exchange_bytes(k, t.p.numel(), value_bytes, shared, world, coding);
    const double dense = dense_exchange_bytes(t.p.numel(), value_bytes, world);
    if (sparse >= dense) {
      reason = "sparse bytes " + std::to_string(int64_t(sparse)) + " >= dense bytes " + std::to_string(int64_t(dense));
      return Route::Dense;
    }
  }
  reason = shared ? "indices shared across ranks" : "compressed";
  return shared ? Route::SharedIndices : Route::Sparse;
}

RoutedTensors route_tensors(std::vector<TensorStep>& tensors, int world, IndexCoding coding, RoutingMemory memory,
                            StepStats& st) {
  RoutedTensors routed;
  for (auto& t : tensors) {
    std::string reason;
    const Route r = route_for(t, world, coding, reason);
    auto known = memory.current.find(t.name);
    if (known == memory.current.end() || known->second != r) {
      memory.current[t.name] = r;
      memory.log.push_back({t.name, r, reason});
    }
    t.route = r;
    st.elements_in += t.p.numel();
    st.bytes_dense_equivalent += int64_t(dense_exchange_bytes(t.p.numel(), int64_t(t.p.element_size()), world));
    switch (r) {
      case Route::Sparse: routed.sparse.push_back(&t); break;
      case Route::SharedIndices: routed.shared.push_back(&t); break;
      case Route::Dense: routed.dense.push_back(&t); break;
      case Route::Gather: routed.gather.push_back(&t); break;
      case Route::Sum: routed.sum.push_back(&t); break;
      case Route::Rounds: routed.rounds.push_back(&t); break;
    }
  }
  return routed;
}

}  // namespace detail
}  // namespace cddp
