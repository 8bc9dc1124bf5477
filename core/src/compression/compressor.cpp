// compressor.cpp — the Compressor defaults: scatter-based decompression and the generic
// (unfused) error-feedback chain that fused plugin paths must match bit for bit.
#include <cddp/compressor.h>

#include <ATen/ATen.h>

#include <cmath>

namespace cddp {

const char* payload_kind_name(PayloadKind kind) {
  switch (kind) {
    case PayloadKind::Gather: return "gather";
    case PayloadKind::Sum: return "sum";
    case PayloadKind::Rounds: return "rounds";
  }
  return "unknown";
}

int64_t Payload::wire_bytes() const {
  int64_t bytes = 0;
  for (const auto& p : parts)
    if (p.defined()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  return bytes;
}

int64_t Compressed::wire_bytes() const {
  if (!values.defined()) return 0;
  return values.numel() * static_cast<int64_t>(values.element_size()) +
         indices.numel() * static_cast<int64_t>(indices.element_size());
}

at::ScalarType index_dtype_for(int64_t numel) {
  return numel < (int64_t{1} << 31) ? at::kInt : at::kLong;
}

void check_indices_in_range(const at::Tensor& indices, int64_t numel, const std::string& who) {
  if (indices.numel() == 0) return;
  const auto [min, max] = at::aminmax(indices);
  const int64_t lo = min.item<int64_t>(), hi = max.item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < numel, who, ": selection index ", lo < 0 ? lo : hi, " is out of range [0, ", numel, ")");
}

int64_t k_for_ratio(double ratio, int64_t numel) {
  if (numel <= 0) return 0;
  // ceil in long double so that ratio*numel products like 0.01*25e6 do not round up by one ulp.
  long double exact = static_cast<long double>(ratio) * static_cast<long double>(numel);
  int64_t k = static_cast<int64_t>(std::ceil(exact - 1e-9L * exact));
  if (k < 1) k = 1;
  if (k > numel) k = numel;
  return k;
}

at::Tensor Compressor::decompress(const Compressed& c) const {
  at::Tensor dense = at::zeros({c.numel}, c.values.defined() ? c.values.options() : at::TensorOptions(c.dtype));
  decompress_add_(c, dense);
  return dense.view(c.shape);
}

void Compressor::decompress_add_(const Compressed& c, at::Tensor& dense) const {
  TORCH_CHECK(dense.is_contiguous() && dense.numel() == c.numel,
              "decompress_add_: dense must be contiguous with ", c.numel, " elements, got ", dense.sizes());
  if (c.count() == 0) return;
  check_indices_in_range(c.indices, c.numel, "compressor '" + name() + "'");
  // index_add_ on a flat view: duplicates (never produced by our compressors) would sum.
  dense.view(-1).index_add_(0, c.indices.to(at::kLong), c.values.to(dense.scalar_type()));
}

Compressed Compressor::compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                              const CompressContext& ctx) {
  // Error feedback, Seide et al. 2014 ("1-bit SGD") / Karimireddy et al. 2019 ("EF-SGD"):
  at::Tensor acc = grad.reshape(residual.sizes()) + residual;  // acc = g + e_t
  Compressed sent = compress(acc, ctx);                          // sent = C(acc)
  at::Tensor dense = at::zeros_like(acc);
  decompress_add_(sent, dense);
  residual.copy_(acc - dense);                                   // e_{t+1} = acc - D(C(acc))
  return sent;
}

Compressed Compressor::compress_with_momentum_feedback(const at::Tensor& grad, at::Tensor& velocity, double momentum,
                                                       at::Tensor& residual, const CompressContext& ctx) {
  velocity.mul_(momentum).add_(grad.reshape(velocity.sizes()));  // u_t = m·u_{t−1} + g_t (DGC)
  return compress_with_feedback(velocity, residual, ctx);         // C(u_t + e), e ← acc − D
}

}  // namespace cddp

namespace cddp {

namespace {
[[noreturn]] void not_implemented(const Compressor& c, const char* what, const char* kind) {
  TORCH_CHECK(false, "compressor '", c.name(), "' does not implement ", what, " (needed by ", kind,
              " payloads): its declared capabilities and its code disagree");
}
}  // namespace

PluginCaps Compressor::caps() const {
  PluginCaps c;
  c.shared_indices = shared_indices();
  c.kind = c.shared_indices ? PayloadKind::Sum : PayloadKind::Gather;
  c.fused_feedback = has_fused_feedback();
  c.default_density = default_density();
  c.devices = supported_devices();
  return c;
}

Compressed Compressor::compress(const at::Tensor&, const CompressContext&) {
  not_implemented(*this, "compress()", "selection");
}

void Compressor::encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) {
  out = encode(acc, state, ctx);
}

at::Tensor reusable_part(Payload& previous, size_t part, int64_t numel, at::ScalarType dtype) {
  if (part < previous.parts.size()) {
    const at::Tensor& t = previous.parts[part];
    if (t.defined() && t.is_cpu() && t.scalar_type() == dtype && t.numel() == numel && t.dim() == 1 &&
        t.is_contiguous() && t.storage_offset() == 0 && t.use_count() == 1 && t.storage().use_count() == 1)
      return t;
  }
  return at::empty({numel}, at::TensorOptions(dtype));
}

Payload Compressor::encode(const at::Tensor&, PluginState&, const CompressContext&) {
  not_implemented(*this, "encode()", "gather and sum");
}
void Compressor::decode_add_(const Payload&, at::Tensor&) const {
  not_implemented(*this, "decode_add_()", "gather and sum");
}
void Compressor::combine(const std::vector<Payload>&, at::Tensor&) const {
  not_implemented(*this, "combine()", "gather");
}
void Compressor::decode_sum(const Payload&, int, at::Tensor&) const { not_implemented(*this, "decode_sum()", "sum"); }
void Compressor::run_rounds(const at::Tensor&, PluginState&, RoundCollective&, const CompressContext&, at::Tensor&,
                            at::Tensor&) {
  not_implemented(*this, "run_rounds()", "rounds");
}
std::vector<StateSpec> Compressor::state_specs(const std::vector<int64_t>&, at::ScalarType) const { return {}; }
int64_t Compressor::wire_bytes(const std::vector<int64_t>&, at::ScalarType, double) const { return -1; }

}  // namespace cddp
