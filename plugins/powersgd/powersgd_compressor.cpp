// powersgd_compressor.cpp — PowerSgdCompressor: the two rounds, the orthogonalizations and the
// seeded Q (the algorithm and its shapes: powersgd_compressor.h; Vogels et al., NeurIPS 2019).
// It will not communicate other than through the RoundCollective, nor touch the global RNG.
#include "powersgd_compressor.h"

#include "powersgd_math.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace cddp::powersgd {

extern const ParamSpec kPowerSgdParams[];
extern const size_t kPowerSgdParamCount;

namespace {

// Gram-Schmidt on the columns of each matrix of a batch [b, n, r], in place, as the hook's
// _orthogonalize_gram_schmidt: column i is normalized (by ‖q_i‖ + epsilon), then removed from
// the columns after it. A zero column with epsilon 0 becomes 0 where the hook gets NaN.
void gram_schmidt_(at::Tensor& mats, double epsilon) {
  const int64_t r = mats.size(2);
  for (int64_t i = 0; i < r; ++i) {
    at::Tensor col = mats.narrow(2, i, 1);                                  // [b, n, 1]
    at::Tensor norm = at::linalg_vector_norm(col, 2, at::IntArrayRef{1}, true);  // [b, 1, 1]
    if (epsilon == 0) {
      col.div_(norm).masked_fill_(norm.eq(0), 0);
    } else {
      col.div_(norm + epsilon);
    }
    if (i + 1 < r) {
      at::Tensor rest = mats.narrow(2, i + 1, r - i - 1);                 // [b, n, r − i − 1]
      rest.sub_(at::sum(col * rest, {1}, true) * col);                    // minus ⟨q_i, rest⟩·q_i
    }
  }
}

// The hook's _orthogonalize: Gram-Schmidt for r ≤ 2, else the Q of a reduced Householder QR
// (what torch.linalg.qr returns; epsilon does not apply there). n ≥ r always (r ≤ min(n, m)).
void orthogonalize_(at::Tensor& mats, double epsilon) {
  if (mats.size(2) <= 2) {
    gram_schmidt_(mats, epsilon);
    return;
  }
  mats.copy_(std::get<0>(at::linalg_qr(mats, "reduced")));
}

// One matrix [n, r], in place: a batch of one.
void orthogonalize_matrix_(const at::Tensor& matrix, double epsilon) {
  at::Tensor batch = matrix.unsqueeze(0);  // [1, n, r], a view
  orthogonalize_(batch, epsilon);
}

// A NaN or ±Inf anywhere makes the sum non-finite, so one summing pass (no bool tensor) clears
// almost every call; a non-finite sum of finite entries (an overflow past 3.4e38) is told apart
// by the exact test. Not a check of P: a BLAS may skip the products with a zero of Q (the
// reference BLAS does), and an Inf of M would then never reach P.
void check_finite(const at::Tensor& t, const CompressContext& ctx) {
  // In t's own dtype: sum(kDouble) of a float tensor first copies it to double (32 MB a step
  // for the study mlp's 2048 × 2048 weight, fresh pages each time).
  if (std::isfinite(t.sum().item<double>())) return;
  TORCH_CHECK(at::isfinite(t).all().item<bool>(), "powersgd: non-finite value (NaN or Inf) in parameter '",
              ctx.param_name, "' at step ", ctx.step);
}

}  // namespace

PowerSgdCompressor::PowerSgdCompressor(const ParamMap& params) {
  ParamReader r("powersgd", kPowerSgdParams, kPowerSgdParamCount, params);
  rank_ = r.get_int("rank");
  start_iter_ = r.get_int("start_iter");
  min_rate_ = r.get_double("min_compression_rate");
  epsilon_ = r.get_double("orthogonalization_epsilon");
  warm_start_ = r.get_bool("warm_start");
  keep_p_ = r.get_bool("keep_p");
}

void PowerSgdCompressor::run_rounds(const at::Tensor& acc, PluginState& state, RoundCollective& coll,
                                    const CompressContext& ctx, at::Tensor& average, at::Tensor& approx) {
  TORCH_CHECK(acc.is_cpu(), "powersgd: parameter '", ctx.param_name, "' is on ", acc.device(),
              "; powersgd runs on CPU");
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble, "powersgd: parameter '",
              ctx.param_name, "' is ", acc.scalar_type(), "; expected float32 or float64");
  const int64_t numel = acc.numel();
  TORCH_CHECK(average.is_contiguous() && average.numel() == numel && approx.is_contiguous() &&
                  approx.numel() == numel && average.scalar_type() == acc.scalar_type(),
              "powersgd: parameter '", ctx.param_name, "': average and approx need ", numel,
              " contiguous entries, average of the gradient's dtype ", acc.scalar_type());
  if (numel == 0) return;  // the same on every rank: no round at all
  const int world = coll.world_size();
  const MatrixPlan plan = plan_for(acc.sizes().vec(), rank_, min_rate_);

  if (!plan.compress || ctx.step <= start_iter_) {
    // Uncompressed: one allreduce of the whole tensor; nothing is lost, so no residual.
    check_finite(acc, ctx);
    at::Tensor sum = acc.reshape(-1).clone();  // [numel]
    coll.allreduce_sum_(sum);
    average.view(-1).copy_(sum.div_(world));
    approx.view(-1).copy_(acc.reshape(-1));
    return;
  }

  const int64_t n = plan.rows, m = plan.cols, r = plan.rank;
  auto q_it = state.find("q");
  TORCH_CHECK(q_it != state.end() && q_it->second.sizes() == at::IntArrayRef({m, r}) &&
                  q_it->second.scalar_type() == acc.scalar_type(),
              "powersgd: parameter '", ctx.param_name, "' needs the state 'q' ", acc.scalar_type(), "[", m, ", ", r,
              "] that state_specs() declares");
  at::Tensor& q_state = q_it->second;

  // 2-D products throughout: at::mm hands Mᵀ to BLAS as a transpose flag, and P·Qᵀ is written
  // straight into `average` (bench_compressors, rows rounds/ and rounds_floor/).
  const at::Tensor M = acc.reshape({n, m});  // [n, m], this rank's acc = g + e
  at::Tensor q;                              // [m, r]
  if (!warm_start_ || !q_state.ne(0).any().item<bool>()) {
    // The same draw on every rank: a generator of its own, seeded by (run seed, parameter, step).
    at::Generator gen = at::detail::createCPUGenerator(q_seed(ctx.seed, ctx.param_index, ctx.step));
    q = at::randn({m, r}, gen, acc.options());
  } else {
    q = q_state.clone();
  }
  orthogonalize_matrix_(q, epsilon_);

  check_finite(acc, ctx);        // before anything is sent
  at::Tensor p = at::mm(M, q);  // [n, m]·[m, r] → [n, r]
  coll.allreduce_sum_(p);       // round 1: Σ_w M_w·Q
  orthogonalize_matrix_(p, epsilon_);

  at::Tensor q_next = at::mm(M.t(), p);  // [m, n]·[n, r] → [m, r]
  coll.allreduce_sum_(q_next);           // round 2: Σ_w M_wᵀ·P
  q_next.div_(world);                    // the mean Q

  at::Tensor out = average.view({n, m});
  at::mm_out(out, p, q_next.t());            // [n, r]·[r, m] → [n, m]: the mean over ranks, P·Qᵀ
  approx.view(-1).copy_(average.view(-1));  // e = M − P·Qᵀ, as the hook keeps it
  q_state.copy_(q_next);        // after both rounds: a failed round leaves the state as it was
  if (keep_p_) {
    auto p_it = state.find("p");
    TORCH_CHECK(p_it != state.end() && p_it->second.sizes() == at::IntArrayRef({n, r}), "powersgd: parameter '",
                ctx.param_name, "' needs the state 'p' [", n, ", ", r, "] that keep_p declares");
    p_it->second.copy_(p);
  }
}

std::vector<StateSpec> PowerSgdCompressor::state_specs(const std::vector<int64_t>& shape, at::ScalarType dtype) const {
  const MatrixPlan plan = plan_for(shape, rank_, min_rate_);
  if (!plan.compress) return {};
  std::vector<StateSpec> specs{{"q", {plan.cols, plan.rank}, dtype}};
  if (keep_p_) specs.push_back({"p", {plan.rows, plan.rank}, dtype});
  return specs;
}

int64_t PowerSgdCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double) const {
  const int64_t value_bytes = int64_t(c10::elementSize(dtype));
  const MatrixPlan plan = plan_for(shape, rank_, min_rate_);
  if (plan.compress) return plan.rank * (plan.rows + plan.cols) * value_bytes;  // P [n, r] and Q [m, r]
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return numel * value_bytes;  // a dense allreduce's: the router sends it dense
}

}  // namespace cddp::powersgd
