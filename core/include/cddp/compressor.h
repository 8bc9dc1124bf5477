// compressor.h — the abstract gradient compressor that every plugin implements.
//
// A Compressor turns one dense gradient into a payload (payload.h) and back. Sparsifiers
// (PluginCaps::selection) produce a `Compressed` (values + indices) through compress(), and
// the host averages the ranks' selections itself. Every other family (quantizers, signs,
// casts: Gather or Sum payloads; PowerSGD: Rounds) implements encode() and the decode for
// its kind. It is pure computation on one rank: it never communicates but through the
// RoundCollective it is handed, never keeps error feedback or other state of its own (the
// optimizer owns the residual and the PluginState), and never touches the global RNG. Plugins
// implement it; the host only ever sees it through PluginCompressor, which keeps the plugin's
// library loaded, stops exceptions at the library boundary and answers capabilities from data.
#pragma once

#include <cddp/payload.h>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cddp {

// What a compressor is told about the tensor it compresses. The step and parameter index
// make seeded selections (random-k) reproducible and identical on every rank.
struct CompressContext {
  int64_t step = 0;             // optimizer step, counted from 1
  int64_t param_index = 0;      // position of the parameter in the optimizer (-1: whole model)
  std::string param_name;       // for error messages; may be empty
  uint64_t seed = 0;            // run seed, identical on every rank
  double ratio = -1.0;          // density override for this call (warm-up, per-layer rule); <0: plugin's own
  int world_size = 1;           // ranks that will combine the payloads (a cast scales by it before summing)
};

// A sparse gradient: `values[i]` belongs at flat position `indices[i]` of a dense tensor of
// `shape`. Shapes: values [k] of `dtype`, indices [k] int32 (int64 when numel >= 2^31).
struct Compressed {
  at::Tensor values;
  at::Tensor indices;
  int64_t numel = 0;
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::ScalarType::Float;

  int64_t count() const { return values.defined() ? values.numel() : 0; }
  // Bytes this selection occupies on the wire: values plus indices at their real sizes.
  int64_t wire_bytes() const;
};

// The index dtype the ABI uses for a tensor of `numel` elements.
at::ScalarType index_dtype_for(int64_t numel);

class Compressor {
 public:
  virtual ~Compressor() = default;

  virtual std::string name() const = 0;
  // ABI 1: a plugin's devices. Under ABI 2 the host reads them from the declared capabilities.
  virtual std::vector<c10::DeviceType> supported_devices() const { return {c10::DeviceType::CPU}; }
  // What this compressor can do. A plugin's are data (its cddp_plugin_caps); the default, for
  // compressors made in-process, is a selection described by the three ABI-1 queries below.
  virtual PluginCaps caps() const;

  // Selections: select from `grad` (any shape, any strides). Throws c10::Error with a clear
  // message on bad input (NaN, unsupported dtype or device), naming ctx.param_name. The
  // default throws: a codec that is not a selection implements encode() instead.
  virtual Compressed compress(const at::Tensor& grad, const CompressContext& ctx);

  // Dense tensor of the compressed shape with the selection scattered in, zeros elsewhere.
  virtual at::Tensor decompress(const Compressed& c) const;
  // dense.view(-1)[indices] += values. `dense` must be contiguous with c.numel elements.
  virtual void decompress_add_(const Compressed& c, at::Tensor& dense) const;

  // True when every rank selects the same indices for the same ctx (seeded random-k), so
  // ranks may sum values directly instead of gathering indices.
  virtual bool shared_indices() const noexcept { return false; }

  // The density it keeps when CompressContext::ratio does not override it, or -1 when the
  // count depends on the data (threshold compressors). Used to route tensors before compressing.
  virtual double default_density() const noexcept { return -1.0; }

  // Error feedback fused with selection. Contract (bitwise): with acc = grad + residual,
  //   returns C(acc) and leaves residual = acc - decompress(C(acc)).
  // The default is exactly that three-step chain; plugins override it with a faster
  // single pass that must produce the same bits. `residual` must be contiguous.
  virtual Compressed compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                            const CompressContext& ctx);
  virtual bool has_fused_feedback() const noexcept { return false; }

  // ---- payloads that are not selections (PluginCaps::selection false; ABI v2) ----
  // The defaults throw "not implemented" naming the plugin: a plugin implements those its
  // PayloadKind needs.

  // Gather and Sum: this rank's payload for acc (error feedback already added by the host).
  virtual Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx);
  // dense += D(payload), dense contiguous with payload.numel entries: the host's residual is
  // acc − D(own payload), so it must decode exactly what combine()/decode_sum() count for it.
  virtual void decode_add_(const Payload& payload, at::Tensor& dense) const;
  // Gather: `ranks[r]` is rank r's payload; writes the aggregate (for averaging plugins the
  // mean, summed in rank order) into `average` (contiguous, numel entries, every entry written).
  virtual void combine(const std::vector<Payload>& ranks, at::Tensor& average) const;
  // Sum: `sum` holds the elementwise sum of `world` ranks' payload parts; writes the average.
  virtual void decode_sum(const Payload& sum, int world, at::Tensor& average) const;
  // Rounds: the whole protocol for acc, through `collective` only. Writes the average over
  // ranks into `average` and this rank's own approximation (what the residual discounts) into
  // `approx`; both contiguous with acc.numel() entries. `state` holds state_specs().
  // The host runs the protocols of a step's tensors at once, one thread each, and merges their
  // k-th allreduces into one collective: run_rounds may be called concurrently for different
  // tensors, so it must not write to the compressor object (which holds no state anyway).
  virtual void run_rounds(const at::Tensor& acc, PluginState& state, RoundCollective& collective,
                          const CompressContext& ctx, at::Tensor& average, at::Tensor& approx);
  // The state this plugin keeps between steps for a tensor of this shape (none by default).
  virtual std::vector<StateSpec> state_specs(const std::vector<int64_t>& shape, at::ScalarType dtype) const;
  // The cost model: bytes one rank hands to the collectives for such a tensor at `density`
  // (−1: its own). -1 when it cannot tell (the router then keeps the tensor compressed).
  virtual int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const;

  // Gather and Sum: encode() into buffers the host keeps for this tensor. On entry `out` holds
  // this tensor's payload of the previous step (nothing the first time, or after a route
  // change): parts the host no longer reads, which the plugin may overwrite when their dtype and
  // size are what it would allocate (reusable_part below) instead of allocating a fresh 50 MB a
  // step. On return `out` is the payload, as encode() would have returned it: the same bits
  // whether or not anything was reused. The default ignores what it is handed:
  // out = encode(acc, state, ctx). Appended to the class: the host reaches it only through the
  // ABI's encode_into trampoline (plugin_abi.h), which a plugin built before it lacks.
  virtual void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out);

  // Selections: DGC's momentum correction (Lin et al., ICLR 2018) in front of error feedback.
  // Contract (bitwise): velocity.mul_(momentum).add_(grad), then
  // compress_with_feedback(velocity, residual, ctx). The default is exactly that chain; a
  // plugin with fused feedback may make it one pass (top-k does) that gives the same bits. It
  // will not mask the velocity where entries were sent: the host does, after checking the
  // selection. `velocity` and `residual` are contiguous, of grad's numel. Appended to the class:
  // the host reaches a plugin's through the ABI's compress_with_momentum_feedback trampoline.
  virtual Compressed compress_with_momentum_feedback(const at::Tensor& grad, at::Tensor& velocity, double momentum,
                                                     at::Tensor& residual, const CompressContext& ctx);
};

// For encode_into: `previous.parts[part]` when it is a contiguous CPU tensor of `numel` entries of
// `dtype` that no one else holds (use_count 1: a view someone kept would see it change), else a
// fresh at::empty. Its contents are whatever they were: the caller writes every entry.
at::Tensor reusable_part(Payload& previous, size_t part, int64_t numel, at::ScalarType dtype);

// Throws c10::Error "<who>: selection index <i> is out of range [0, numel)" unless every entry
// of `indices` lies in [0, numel). One pass (aminmax) over the k indices.
void check_indices_in_range(const at::Tensor& indices, int64_t numel, const std::string& who);

// k for a density: ceil(ratio * numel) clamped to [1, numel] (0 for an empty tensor).
int64_t k_for_ratio(double ratio, int64_t numel);

}  // namespace cddp
