// sparse_allreduce.h — the mean of W ranks' sparse selections with per-rank traffic that does
// not grow with W: a region-wise sparse reduce-scatter, a re-selection, and an allgather of
// the re-selected entries, after Ok-Topk (Li & Hoefler, "Near-Optimal Sparse Allreduce for
// Distributed Deep Learning", PPoPP 2022).
//
// Per tensor of n entries, rank r owns region r, the index range [r·n/W, (r+1)·n/W):
//   1. counts: one alltoall of 2P int64 per rank pair (P tensors): how many entries each rank
//      sends each owner, and each rank's selection size k_s;
//   2. reduce-scatter: one alltoall; each rank sends every owner the entries of its selection
//      that lie in the owner's region (offsets in the region Block16-coded, 2 bytes each and 4 a
//      65,536-entry block, or uint32 where that is smaller; values in the wire type);
//      the owner sums them per index in rank order, from +0 (the allgather route's order);
//   3. re-selection: the owner keeps the b = ceil(max_s k_s / W) sums of largest magnitude
//      (ties: the lower index), so b·W ≥ every rank's k entries survive in all;
//   4. allgather of every region's kept (offset, sum), offsets coded as in step 2, padded to b
//      entries: equal sizes on every rank, as Gloo in LibTorch 1.13 needs. The mean is sum / W,
//      the same on every rank.
// Per rank that receives (W−1)/W·k entries in step 2 (when the selection is spread evenly) and
// (W−1)·b ≈ k in step 4: at most about 2k entries for any W, against (W−1)·k for an allgather.
// The price is three collectives instead of one or two, and the re-selection.
//
// Nothing is lost: an entry this rank sent that its owner did not keep, and the owner's rounding
// of a kept sum to the wire type (S − round(S), exact by Sterbenz's lemma), come back in
// `returned`, for the caller to add to this rank's residual. Summed over ranks,
// W·mean + Σ returned == Σ sent, entry by entry (exact when the sums are).
//
// Unlike Ok-Topk, the regions are equal index ranges, not rebalanced from the last step's
// selections, and the kept count is a fixed budget, not a threshold: an owner whose region holds
// more than b strong entries returns the rest. Internal to core/src/exchange. It will not decide
// routing, touch residuals itself, or handle selections other than CPU float/double ones.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>
#include <cddp/gradient_exchange.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace cddp::detail {

// One tensor's part in a SparseAllreduce call.
struct SparseAllreduceSlot {
  const Compressed* local = nullptr;  // this rank's selection: CPU, float or double values
  SparseAverage* mean = nullptr;      // out: the coalesced mean, indices strictly increasing
  SparseAverage* returned = nullptr;  // out: what this rank adds to its residual (indices may repeat)
};

// Bytes one rank receives in a SparseAllreduce of one tensor of `numel` entries, k selected on
// every rank, at W ranks (the model for the cost comparison and the benchmark's formula), with
// s = ceil(k/W) entries from each rank in step 2 (an evenly spread selection) and b = ceil(k/W)
// kept in step 4, in regions of R = ceil(numel/W) entries:
//   (W−1)·(off(s, R) + s·v) + (W−1)·(8 + off(b, R) + b·v3) + 16·(W−1)
// where off(n, R) is the offsets' bytes: min(4n, 4·ceil(R/65536) + 2n) (Block16 or uint32).
// v: the wire value bytes of step 2, v3 those of step 4.
double sparse_allreduce_received_bytes(int64_t k, int64_t numel, int64_t value_bytes, int64_t kept_value_bytes,
                                       int world);

class SparseAllreduce {
 public:
  // `values` is the wire type of step 2 for float selections (kFloat, kBFloat16 or kHalf; double
  // selections travel as double unless it is 16-bit). Step 4 carries sums in the same type,
  // except fp16, whose sums travel as fp32: a sum of W fp16 values can overflow it.
  SparseAllreduce(Communicator& comm, ValueWire values) : comm_(comm), values_(values) {}

  // Every rank calls it with the same tensors in the same order. World size > 1.
  void run(std::vector<SparseAllreduceSlot>& slots, StepStats& stats);

 private:
  Communicator& comm_;
  ValueWire values_;
};

}  // namespace cddp::detail
