// typed_options.cpp — the option checks, and the strings parsed into enums (typed_options.h).
#include "typed_options.h"

#include <c10/util/Exception.h>

#include <string>

namespace cddp::detail {

void check_options(const CompressedSGDOptions& o, const std::string& where) {
  TORCH_CHECK(o.lr() >= 0, where, "Invalid learning rate: ", o.lr());
  TORCH_CHECK(o.momentum() >= 0, where, "Invalid momentum value: ", o.momentum());
  TORCH_CHECK(o.dampening() >= 0, where, "Invalid dampening value: ", o.dampening());
  TORCH_CHECK(o.weight_decay() >= 0, where, "Invalid weight_decay value: ", o.weight_decay());
  TORCH_CHECK(!o.nesterov() || (o.momentum() > 0 && o.dampening() == 0), where,
              "Nesterov momentum requires a momentum and zero dampening");
  TORCH_CHECK(o.density() < 0 || (o.density() > 0 && o.density() <= 1), where,
              "Invalid compression ratio (density): ", o.density(), "; expected 0 < ratio <= 1");
  for (const auto& r : o.rules())
    TORCH_CHECK(r.density < 0 || (r.density > 0 && r.density <= 1), where, "Invalid compression ratio ", r.density,
                " in rule '", r.match, "'; expected 0 < ratio <= 1");
  TORCH_CHECK(o.momentum_mode() == "global" || o.momentum_mode() == "dgc", where, "Invalid momentum_mode '",
              o.momentum_mode(), "'; expected \"global\" or \"dgc\"");
  TORCH_CHECK(o.nonfinite() == "error" || o.nonfinite() == "skip_step", where, "Invalid nonfinite policy '",
              o.nonfinite(), "'; expected \"error\" or \"skip_step\"");
  TORCH_CHECK(o.scope() == "layer" || o.scope() == "model", where, "Invalid scope '", o.scope(),
              "'; expected \"layer\" or \"model\"");
  TORCH_CHECK(o.min_numel() >= 0, where, "Invalid min_numel: ", o.min_numel());
  TORCH_CHECK(o.index_coding() == "block16" || o.index_coding() == "plain", where, "Invalid index_coding '",
              o.index_coding(), "'; expected \"block16\" or \"plain\"");
  TORCH_CHECK(o.value_dtype() == "fp32" || o.value_dtype() == "bf16" || o.value_dtype() == "fp16", where,
              "Invalid value_dtype '", o.value_dtype(), "'; expected \"fp32\", \"bf16\" or \"fp16\"");
  TORCH_CHECK(o.exchange() == "allgather" || o.exchange() == "sparse_allreduce" || o.exchange() == "auto", where,
              "Invalid exchange '", o.exchange(), "'; expected \"allgather\", \"sparse_allreduce\" or \"auto\"");
  TORCH_CHECK(!(o.scope() == "model" && o.momentum_mode() == "dgc" && o.momentum() != 0), where,
              "scope \"model\" with momentum needs momentum_mode \"global\" (DGC's momentum correction is "
              "kept per tensor); momentum_mode is \"dgc\", the default");
  TORCH_CHECK(!(o.overlap() && o.scope() == "model"), where,
              "overlap needs scope \"layer\": scope \"model\" makes one selection over every gradient, which "
              "cannot start before backward has finished them all");
  // The overlapped buckets run the allgather or the sparse allreduce (each tensor's mean and
  // returned entries depend on that tensor alone, so per bucket gives the serial bits). "auto"
  // chooses once, from the first exchange's selections: with overlap the first bucket's that
  // holds sparse ones, serially every tensor's; the two choices can differ (config.md says so).
  TORCH_CHECK(o.bucket_cap_mb() > 0 && o.first_bucket_cap_mb() > 0, where, "Invalid bucket_cap_mb ",
              o.bucket_cap_mb(), " / first_bucket_cap_mb ", o.first_bucket_cap_mb(), "; expected > 0 (MiB)");
}

StepSettings parse_settings(const CompressedSGDOptions& d) {
  StepSettings s;
  s.nonfinite = d.nonfinite() == "skip_step" ? NonfinitePolicy::SkipStep : NonfinitePolicy::Error;
  s.scope = d.scope() == "model" ? SelectionScope::Model : SelectionScope::Layer;
  s.index_coding = d.index_coding() == "plain" ? IndexCoding::Plain : IndexCoding::Block16;
  s.value_wire = d.value_dtype() == "bf16"   ? ValueWire::BFloat16
                 : d.value_dtype() == "fp16" ? ValueWire::Half
                                             : ValueWire::Native;
  s.exchange = d.exchange() == "sparse_allreduce" ? ExchangeChoice::SparseAllreduce
               : d.exchange() == "auto"           ? ExchangeChoice::Auto
                                                  : ExchangeChoice::Allgather;
  return s;
}

namespace {
// A group's value for an optimizer-wide option must be defaults()'s: it would be ignored.
template <class T>
void require_same(const T& group, const T& defaults, size_t index, const char* option, const char* why) {
  TORCH_CHECK(group == defaults, "param group ", index, " sets ", option,
              " differently from the optimizer's defaults(); ", option, " is optimizer-wide (", why,
              "): set it in the options the optimizer is constructed with");
}
}  // namespace

void adopt_group(StepSettings& s, const CompressedSGDOptions& g, const CompressedSGDOptions& d, size_t index) {
  check_options(g, "param group " + std::to_string(index) + ": ");
  require_same(g.nonfinite(), d.nonfinite(), index, "nonfinite", "one decision for the whole step");
  require_same(g.scope(), d.scope(), index, "scope", "\"model\" selects over every group's tensors at once");
  require_same(g.index_coding(), d.index_coding(), index, "index_coding", "the exchange's wire format");
  require_same(g.value_dtype(), d.value_dtype(), index, "value_dtype", "the exchange's wire format");
  require_same(g.exchange(), d.exchange(), index, "exchange", "one sparse exchange for every tensor");
  require_same(g.communicator(), d.communicator(), index, "communicator", "the exchange's ranks");
  require_same(g.track_residual_norm(), d.track_residual_norm(), index, "track_residual_norm",
               "one norm over every residual");
  const char* buckets = "the buckets of the overlapped exchange are planned once, over every parameter";
  require_same(g.overlap(), d.overlap(), index, "overlap", buckets);
  require_same(g.bucket_cap_mb(), d.bucket_cap_mb(), index, "bucket_cap_mb", buckets);
  require_same(g.first_bucket_cap_mb(), d.first_bucket_cap_mb(), index, "first_bucket_cap_mb", buckets);
  if (s.scope == SelectionScope::Model) {
    const char* why = "with scope \"model\" one selection is made for every group's tensors together";
    require_same(g.compressor(), d.compressor(), index, "compressor", why);
    require_same(g.density(), d.density(), index, "density", why);
    require_same(g.error_feedback(), d.error_feedback(), index, "error_feedback", why);
    require_same(g.seed(), d.seed(), index, "seed", why);
  }
  s.momentum_mode.push_back(g.momentum_mode() == "dgc" ? MomentumMode::Dgc : MomentumMode::Global);
}

}  // namespace cddp::detail
