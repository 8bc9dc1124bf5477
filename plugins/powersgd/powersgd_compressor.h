// powersgd_compressor.h — PowerSGD (Vogels, Karimireddy and Jaggi, NeurIPS 2019, "PowerSGD:
// Practical Low-Rank Gradient Compression for Distributed Optimization"), a Rounds payload that
// follows PyTorch's ddp_comm_hooks/powerSGD_hook.py step for step.
//
// Per compressed tensor, with M [n, m] this rank's acc = g + e viewed as a matrix
// (powersgd_math.h), r = min(n, m, rank) and W ranks:
//   Q ← orthogonalize(Q)              Q [m, r]: kept from the last step (warm start), or drawn
//                                     from N(0, 1) by a generator seeded by q_seed(): the
//                                     first time, every step without warm start, or when the
//                                     kept Q is all zeros (M was zero on every rank)
//   P ← M·Q                           [n, m]·[m, r] → [n, r]
//   P ← Σ_w P_w                       round 1 (no 1/W: the orthogonalization removes the scale)
//   P ← orthogonalize(P)              Gram-Schmidt for r ≤ 2, Householder QR (at::linalg_qr)
//                                     for r > 2: the hook's choice, so the signs agree
//   Q ← Mᵀ·P                          [m, n]·[n, r] → [m, r]
//   Q ← (1/W)·Σ_w Q_w                 round 2
//   average = approx = P·Qᵀ           [n, r]·[r, m] → [n, m], the same on every rank
// The host keeps e = acc − approx = M − P·Qᵀ, which is the hook's error feedback (it adds the
// error to the gradient itself; here the host does that, and hands in acc = M). Q, now the
// mean Q, is the state kept for the next step ("q", checkpointed by the host).
// Gram-Schmidt, column i: q_i ← q_i / ‖q_i‖ (epsilon = 0) or q_i / (‖q_i‖ + epsilon), then the
// columns after it lose their projection on q_i. Where ‖q_i‖ = 0 and epsilon = 0 the hook
// divides 0 by 0 (its ZeroDivisionError handler never fires for tensors) and gets NaN; here the
// column becomes 0, which is what that handler means to do.
//
// Uncompressed (allreduced whole, average = Σ_w M_w / W, approx = acc, so no residual):
// optimizer steps 1..start_iter (the hook's first start_powerSGD_iter iterations), 1-D tensors,
// and matrices where low rank does not pay by min_compression_rate. The router sends the last
// two dense anyway (wire_bytes() declares them at a dense allreduce's size). The hook keeps
// e = M − mean for tensors it does not compress after its start; here they carry no residual.
//
// It will not: batch same-shape tensors (the hook's batch_tensors_with_same_shape: no two
// compressed tensors of the study models, mlp 784-2048-2048-10 and simple_cnn, share a shape,
// so it would not pay there; the coalesced rounds already make one collective a round), run on
// GPU, take half-precision tensors, or switch error feedback (that is the host's
// compression.error_feedback; the hook's use_error_feedback).
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

namespace cddp::powersgd {

class PowerSgdCompressor final : public Compressor {
 public:
  explicit PowerSgdCompressor(const ParamMap& params);

  std::string name() const override { return "powersgd"; }
  void run_rounds(const at::Tensor& acc, PluginState& state, RoundCollective& collective, const CompressContext& ctx,
                  at::Tensor& average, at::Tensor& approx) override;
  // "q" [m, r] for a tensor that is compressed (and "p" [n, r] with keep_p); none otherwise.
  std::vector<StateSpec> state_specs(const std::vector<int64_t>& shape, at::ScalarType dtype) const override;
  // r·(n + m) values (P and Q) when compressed; n·m values, a dense allreduce's, otherwise.
  // `density` is ignored: the rank sets the size.
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;

 private:
  int64_t rank_, start_iter_;
  double min_rate_, epsilon_;
  bool warm_start_, keep_p_;
};

}  // namespace cddp::powersgd
