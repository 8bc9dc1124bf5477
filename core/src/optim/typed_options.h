// typed_options.h — CompressedSGDOptions checked, and its strings parsed once into enums.
//
// The string options (momentum_mode, nonfinite, scope, index_coding, value_dtype, exchange) stay strings in the public
// API and in checkpoints; they are parsed here at construction and when a param group first
// appears, so that step() compares enums, never strings. load() keeps the live strings (see
// CompressedSGD::load), so nothing needs parsing again after it. Edit these strings before
// constructing the optimizer (or adding the group): later edits are not seen.
//
// Which options a param group may set for itself:
//   per group (honoured): lr, momentum, dampening, weight_decay, nesterov, compressor, density,
//     error_feedback, residual_lr_scaling, momentum_mode, min_numel, compress_1d, auto_dense,
//     rules, seed.
//   optimizer-wide (read from defaults(); a group whose value differs is refused):
//     nonfinite    — one decision for the whole step, taken on every rank alike;
//     scope        — "model" is one selection over the tensors of every group;
//     index_coding, value_dtype, exchange — the exchange's wire format, one per GradientExchange;
//     communicator — the exchange's ranks, fixed at construction;
//     track_residual_norm — one norm over every residual; the trainer flips it on defaults()
//       between steps, so it is compared when a group joins, not afterwards;
//     overlap, bucket_cap_mb, first_bucket_cap_mb — the buckets are planned once, over every
//       parameter (overlapped_step.h).
//   with scope "model", the whole-model selection is made once, with the compressor, density,
//     error_feedback and seed of its first tensor: groups must agree with defaults() on those.
//
// It will not read gradients, touch state or talk to other ranks.
#pragma once

#include <cddp/compressed_sgd.h>
#include <cddp/gradient_exchange.h>

#include <cstddef>
#include <vector>

namespace cddp::detail {

// momentum_mode: "global" — momentum on the averaged gradient, as torch::optim::SGD; "dgc" —
// momentum corrected locally before compression (Lin et al. 2018).
enum class MomentumMode { Global, Dgc };
// nonfinite: "error" — a NaN/Inf gradient throws; "skip_step" — every rank skips the step.
enum class NonfinitePolicy { Error, SkipStep };
// scope: "layer" — top-k per tensor; "model" — one selection over all compressible gradients.
enum class SelectionScope { Layer, Model };

// exchange: how sparse selections are averaged; "auto" is decided at the first step that has
// any (CompressedSGD::step, by the wire-cost model) and then kept.
enum class ExchangeChoice { Allgather, SparseAllreduce, Auto };

// Everything step() needs from the option strings, parsed.
struct StepSettings {
  NonfinitePolicy nonfinite = NonfinitePolicy::Error;
  SelectionScope scope = SelectionScope::Layer;
  IndexCoding index_coding = IndexCoding::Block16;
  ValueWire value_wire = ValueWire::Native;
  ExchangeChoice exchange = ExchangeChoice::Allgather;
  std::vector<MomentumMode> momentum_mode;  // one per param group, in param_groups() order
};

// Throws (TORCH_CHECK) on an invalid value, naming it; `where` prefixes the message
// ("" for the optimizer's defaults, "param group 2: " for a group).
void check_options(const CompressedSGDOptions& o, const std::string& where = "");

// The optimizer-wide settings, from defaults() (already checked); no groups yet.
StepSettings parse_settings(const CompressedSGDOptions& defaults);

// Checks param group `index` and appends its settings: its own values valid, and the
// optimizer-wide ones equal to defaults()'s (else a TORCH_CHECK naming the option).
void adopt_group(StepSettings& settings, const CompressedSGDOptions& group, const CompressedSGDOptions& defaults,
                 size_t index);

}  // namespace cddp::detail
