// overlapped_step.h — CompressedSGD's step with its exchange overlapping backward
// (Options::overlap). During backward, as soon as a bucket's gradients are final
// (grad_ready_hooks.h, buckets by bucket_plan.h), one job on the optimizer's comm thread
// (comm_worker.h) runs, for that bucket's tensors only, the stages step() runs serially:
//     collect_gradients → non-finite agreement → route → rescale residuals → compress
//     (error feedback, DGC momentum) → encode payloads → exchange
// step() then launches what backward did not, waits for the jobs (rethrowing their error),
// finishes the exchanges kept for the end, and applies the updates as the serial path does.
// The residual, the momentum and every error-feedback term stay in CompressedSGD's state; the
// jobs only run, earlier and on the optimizer's behalf, the stages step() would have run.
//
// Same bits as the serial path (tested over 20 steps at W = 2 and 4). What is exchanged when:
//   - in the bucket's job: the sparse route (allgather or sparse allreduce) and the gather
//     payloads (allgather). Each tensor's average is decoded from every rank's selection in rank
//     order, so it does not depend on what else shares the collective. Exchange "auto" chooses
//     at the first bucket that holds sparse tensors, from theirs alone (serially: from all).
//   - at step(), in parameter order, as one call each as the serial path makes them: the dense
//     route, the shared-indices allreduce, the sum payloads and the rounds (whose k-th
//     allreduces are coalesced across tensors, core/src/exchange/coalesced_rounds.h). An
//     allreduce of a flattened buffer sums an entry in an order that depends on where it sits
//     in the buffer (Gloo's ring reduce-scatter walks chunks of the buffer from a different rank
//     each), so at W > 2 a per-bucket allreduce would not give the serial path's bits. So a
//     rounds plugin (PowerSGD) gains nothing from overlap but its compression's place in time.
//
// Non-finite gradients: every bucket first agrees with every rank on whether any rank holds a
// NaN/Inf in it (one 4-byte allreduce per bucket), so every rank decides the same for the same
// bucket before its state changes.
//   nonfinite = "error": every rank throws at that bucket, as the serial path does (the rank
//     that saw it names the parameter and step). Unlike the serial path, the residuals and DGC
//     momentum of the buckets before it have already advanced (parameters have not).
//   nonfinite = "skip_step": that bucket and the later ones do nothing; at step() the buckets
//     before it get back the residual, momentum, residual_lr and plugin state they had (copied
//     before their compression, only under this policy), and nothing is applied: parameters,
//     every state and the step count end as the serial path leaves them.
//
// Stats: compress_ms and comm_ms are the sums over the buckets' jobs and the step()-time
// exchanges, as before; with overlap much of that time is hidden behind backward, so they are
// no longer on the step's critical path (the time step() itself takes is what is left).
//
// Why not c10d's own Reducer (torch/csrc/distributed/c10d/reducer.hpp) with a CommHookInterface
// (comm.hpp), which LibTorch 1.13 ships with the same bucketing and AccumulateGrad hooks: it is
// built over a c10d::ProcessGroup, while our collectives go through Communicator (tests run it in
// threads, GradientExchange and PayloadExchange speak only to it); its hook gets a GradBucket —
// the bucket's gradients copied into one flat buffer — and returns a future whose tensor the
// Reducer writes back into every .grad. Our stages need each tensor on its own (its residual,
// DGC velocity, plugin state, route, its sparse or coalesced average that never becomes a dense
// .grad), and the update is step()'s. Using it would mean a flat copy per bucket, then splitting
// it again, and a .grad overwritten with something that is not the gradient. What it does and
// we take: buckets in reverse order by bytes with a small first bucket, launched in order, hooks
// on the AccumulateGrad nodes (held here, as it holds them).
//
// Gradient accumulation: set_armed(false) before the backward of every micro-batch but the
// last; a parameter whose gradient arrives twice while armed is an error at step(). Options
// (density from set_density, lr, weight decay) are read when a bucket launches: set them
// before backward. It will not run on other devices than the CPU (no stream synchronisation
// with backward's), nor with scope "model" (refused when options are checked).
#pragma once

#include "bucket_plan.h"
#include "comm_worker.h"
#include "grad_ready_hooks.h"
#include "payload_buffers.h"
#include "step_plan.h"

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/gradient_exchange.h>
#include <cddp/payload_exchange.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cddp::detail {

// What a bucket job reads and writes of its optimizer; it outlives none of these.
struct OverlapEnvironment {
  std::vector<torch::optim::OptimizerParamGroup>& groups;
  const StepSettings& settings;
  const std::vector<std::string>& names;
  GradientExchange& exchange;
  PayloadExchange& payloads;
  PayloadBuffers& payload_buffers;  // the payload stage's per-tensor buffers (payload_buffers.h)
  Communicator& comm;
  RoutingMemory memory;
  const double& density_override;
  const int64_t& steps_taken;
  bool& exchange_decided;         // exchange "auto" (exchange_stage.h, decide_exchange_once)
  std::string& exchange_decision;
  std::function<CompressedSGDParamState&(const at::Tensor&)> state_for;
  std::function<CompressedSGDParamState*(const at::Tensor&)> find_state;  // null when none yet
  std::function<void(const at::Tensor&)> erase_state;
};

class OverlappedStep {
 public:
  OverlappedStep(OverlapEnvironment env, int64_t first_bucket_bytes, int64_t bucket_bytes);
  ~OverlappedStep();

  void set_armed(bool armed) { hooks_->set_armed(armed); }
  size_t bucket_count() const { return buckets_.size(); }

  // At step(): launches the buckets backward did not, waits for every job (rethrows its
  // error), and completes the exchanges kept for the end. Returns false when the step is
  // skipped (non-finite, agreed by every rank) with every state restored; else fills `tensors`
  // (parameter order, each with its average) and adds the step's counts into `stats`.
  bool finish(std::vector<TensorStep>& tensors, StepStats& stats);

 private:
  struct StateBackup {
    at::Tensor param;
    CompressedSGDParamState* state = nullptr;  // null: the parameter had no state yet
    at::Tensor residual, momentum_buffer;
    double residual_lr = 0;
    PluginState plugin_state;
  };
  struct Bucket {
    std::vector<char> members;  // per flat parameter index
    std::vector<TensorStep> tensors;
    RoutedTensors routed;
    StepStats stats;
    std::vector<StateBackup> backups;
  };

  void run_bucket(size_t b);  // on the comm thread
  StateBackup backup_of(const at::Tensor& p) const;
  void restore(const StateBackup& b) const;
  void exchange_deferred(StepStats& stats);
  void clear_round();

  OverlapEnvironment env_;
  size_t param_count_ = 0;
  std::vector<Bucket> buckets_;
  bool skipped_ = false;  // written by the comm thread during a round, read after wait()
  CommWorker worker_;
  std::unique_ptr<GradReadyHooks> hooks_;  // last: its hooks go before anything they reach
};

}  // namespace cddp::detail
