// gradient_exchange.h — *how* compressed and dense gradients are averaged across ranks.
// CompressedSGD decides what goes where; this class packs, calls the Communicator, unpacks.
//
//  - sparse:  every rank's (values, indices) for all tensors of the step are packed into one
//             byte buffer, padded to the largest rank's size (Gloo needs equal sizes), and
//             allgathered once; indices travel as IndexCoding says (2 bytes each by default).
//             Each rank then scatter-adds the ranks' selections in rank order and divides by W,
//             so every rank computes a bitwise identical average —
//             into a dense output, or (SparseSlot::coalesced) into a coalesced list of the
//             O(k·W) entries any rank sent, which never touches the other numel − k·W.
//             Values may travel rounded to 16 bits (ValueWire), and SparseAlgorithm::
//             SparseAllreduce replaces the allgather by a region-wise reduce-scatter and an
//             allgather whose per-rank traffic does not grow with W. Both hand back to the
//             caller what did not arrive (SparseSlot::returned), for its residual.
//  - shared:  compressors whose indices agree on every rank (seeded random-k) allreduce
//             only the values, in one coalesced buffer.
//  - dense:   tensors kept out of compression go through one flattened allreduce.
// It will not decide routing, apply momentum or touch residuals.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cddp {

class GradientExchange;

// How a sparse selection's indices travel.
//   Plain:   int32 (int64 from 2^31 entries on): 4 (8) bytes an index.
//   Block16: the tensor is cut into blocks of 65,536 entries. The rank sends one uint32 count per
//            block, then the low 16 bits of each index, block after block: 2 bytes an index plus
//            4 bytes a block (0.06 bytes an entry at 1 %). It is used whenever it is the smaller
//            of the two (the sizes are known to every rank from the counts), else Plain. Entries
//            travel grouped by block, in list order within a block. This changes no sum: an
//            index lies in one block, so repeats keep their order.
enum class IndexCoding { Plain, Block16 };
// How the values of a sparse selection (float or double) travel:
//   Native:   as their own dtype;
//   BFloat16: rounded to bf16 (fp32's range, 8 significant bits), 2 bytes a value;
//   Half:     rounded to fp16 (11 significant bits, magnitudes up to 65504), 2 bytes a value;
//             a value beyond 65504 is refused with an error naming the tensor, never sent as Inf.
// The rounding, v − round(v), is exact in fp32 (Sterbenz's lemma) and is handed back to the
// caller in SparseSlot::returned / AverageOf::returned(), for its residual: nothing is lost.
// Other dtypes, and world size 1 (nothing reaches a wire), travel as they are.
enum class ValueWire { Native, BFloat16, Half };

// How sparse selections are averaged at world size > 1:
//   Allgather:       every rank receives every other rank's selection, (W−1)·k entries;
//   SparseAllreduce: a region-wise sparse reduce-scatter, a re-selection of each region's
//                    largest sums and an allgather of them (core/src/exchange/sparse_allreduce.h):
//                    about 2k entries for any W. What the re-selection drops is handed back in
//                    `returned`, for the residual of the rank that sent it.
enum class SparseAlgorithm { Allgather, SparseAllreduce };

// The wire settings of a GradientExchange; every rank must use the same.
struct ExchangeWire {
  IndexCoding coding = IndexCoding::Block16;
  ValueWire values = ValueWire::Native;
  SparseAlgorithm algorithm = SparseAlgorithm::Allgather;
};

// Bytes the indices of a selection of `count` entries of an `numel`-entry tensor take on the
// wire, unpadded.
int64_t index_wire_bytes(int64_t count, int64_t numel, IndexCoding coding);

// Lets average_sparse keep one output tensor zero between calls instead of clearing all of it.
// The caller owns one per output and passes it in SparseSlot::reuse, call after call — or
// passes SparseRequests and lets the exchange keep both (AverageOf).
//
// After a call that succeeded, the state records "this output holds that call's result and is
// +0 everywhere except at these entries" (the union of the indices every rank sent, O(k·W)).
// The next call with the same state and the same output re-zeroes only those entries instead
// of the whole tensor; the result is bitwise what a full clear gives. The first call, a call
// after reset(), an output that is not CPU-contiguous, and a selection too dense for it to pay
// (more than numel/16 entries) clear fully, as without a state.
// With more than one rank, a selection that (with what the last call left) covers 1/48 of the
// output or more is decoded by a sweep that writes every entry, zeros included, in one
// streaming pass: no clearing at all, and the state records "everything written" (whole()).
//
// Contract: between two calls, nothing may WRITE into the output — reading it (momentum,
// p -= lr·avg, copies) is fine. A caller that wants to modify it calls reset() first.
// Detected and answered with a full clear: a different output tensor, an in-place ATen op on
// it or on a view of it (its version counter moved; average_sparse/average_shared calls with
// another or no state also move it). Not detected: writes through data_ptr() or .data()
// (a new version counter), and inference tensors (none) — those break the result silently.
class SparseOutputState {
 public:
  void reset() {
    valid_ = false;
    sorted_ = false;
    whole_ = false;
    touched_.clear();
    output_ = at::Tensor();
  }
  // True when the next call may re-zero only touched() entries of the same output.
  bool valid() const { return valid_; }
  int64_t touched() const { return static_cast<int64_t>(touched_.size()); }
  // True when the last call's decode wrote every entry of the output (a dense enough selection,
  // see average_sparse): the next one overwrites everything again or clears it first.
  bool whole() const { return whole_; }

 private:
  friend class GradientExchange;
  bool valid_ = false;
  bool sorted_ = false;           // touched_ strictly increasing: the next decode re-zeroes in its merge
  bool whole_ = false;            // the last decode wrote every entry (a sweep); touched_ is empty
  std::vector<int64_t> touched_;  // flat indices written by the last call (may repeat unless sorted_)
  std::vector<int64_t> spare_;    // where the current call records its entries (swapped in)
  at::Tensor output_;             // the output it describes (shallow reference)
  int64_t version_ = -1;          // output_'s version counter after that call
};

// The mean over ranks as a coalesced sparse list: average[indices[j]] = values[j], +0 at every
// entry no rank sent. Shapes: indices [m] strictly increasing (the selections' index dtype,
// int32 or int64), values [m] of the gradient dtype, m <= the sum of the ranks' counts.
// The tensors are reused from call to call (resized in place), so keep one per output.
struct SparseAverage {
  at::Tensor indices, values;
  int64_t numel = 0;
  bool valid = false;  // true when the last average_sparse call wrote it (else it wrote `average`)
  int64_t count() const { return valid ? values.numel() : 0; }
};

// dense.view(-1)[a.indices] += alpha · a.values, touching only those entries: what
// dense.add_(average, alpha) does, since alpha·(+0) added to any value leaves it unchanged.
// dense: CPU, contiguous, a.numel entries of a.values' dtype. One plain pass over the list
// (ATen's index_add_ spends tens of ns per entry on bookkeeping).
void add_sparse_(const at::Tensor& dense, const SparseAverage& a, double alpha);

struct SparseSlot {
  const Compressed* local;     // this rank's selection
  const Compressor* codec;     // decodes it (decompress_add_)
  at::Tensor* average;         // out: contiguous dense [numel], set to the mean over ranks
  SparseOutputState* reuse = nullptr;  // optional: keep `average` zero between calls (above)
  // >= 0: every rank selects exactly this many entries (fixed-k compressors at a density all
  // ranks share). When every slot says so, the counts allgather is skipped — one collective
  // round trip less per step; a rank whose selection has another size fails loudly.
  int64_t expected_count = -1;
  // Optional out: when set and the selection is a CPU float/double one, the mean is written
  // here (coalesced->valid) and `average` is neither read nor written (its `reuse` state is
  // reset). The same bits as the dense decode at every entry. Otherwise `average` as usual.
  SparseAverage* coalesced = nullptr;
  // Out: what this rank should add back to its residual — the rounding of its values to a
  // 16-bit ValueWire and the entries a SparseAllreduce re-selection dropped (indices may repeat;
  // count 0 when nothing). Required when the exchange may return anything (a 16-bit ValueWire,
  // or SparseAllreduce): refused otherwise, since what it would return would be lost.
  SparseAverage* returned = nullptr;
};

// One tensor's selection for the calls whose outputs the exchange keeps (AverageOf below).
struct SparseRequest {
  std::string key;                     // the output's stable name (a parameter name): reused under it
  const Compressed* local = nullptr;   // this rank's selection
  const Compressor* codec = nullptr;   // decodes it
  int64_t expected_count = -1;         // as SparseSlot::expected_count
  // The caller can apply the mean as a coalesced list: it gets one when the selection is a CPU
  // float/double one (no dense tensor is then allocated), else a dense output as usual.
  bool coalesce = false;
};

// The mean over ranks of one request, kept by the exchange under the request's key, in a
// buffer reused by the next call with that key (a fresh one would be page-faulted in on every
// step: ~100 ms for 25M floats, more than the sparse exchange itself). The exchange alone
// manages its SparseOutputState: on the sparse route the dense output stays +0 between calls
// except where the last call wrote, and only those entries are re-zeroed.
// Read-only for the caller, and valid until the next call with the same key. Reading it
// (momentum, p −= lr·avg, views, copies) is fine; an in-place ATen op on it is detected and
// costs a full clear at the next call; a write through data_ptr() breaks the next result.
class AverageOf {
 public:
  bool is_coalesced() const { return list_.valid; }
  const at::Tensor& dense() const { return tensor_; }   // [numel] contiguous; when !is_coalesced()
  const SparseAverage& list() const { return list_; }  // when is_coalesced()
  // What this rank adds back to its residual (SparseSlot::returned); count() 0 when nothing.
  const SparseAverage& returned() const { return returned_; }

 private:
  friend class GradientExchange;
  at::Tensor tensor_;
  SparseOutputState zeros_;
  SparseAverage list_;
  SparseAverage returned_;
};

class GradientExchange {
 public:
  explicit GradientExchange(Communicator& comm, IndexCoding coding = IndexCoding::Block16)
      : comm_(comm), coding_(coding) {}
  GradientExchange(Communicator& comm, ExchangeWire wire)
      : comm_(comm), coding_(wire.coding), values_(wire.values), algorithm_(wire.algorithm) {}
  IndexCoding index_coding() const { return coding_; }
  ValueWire value_wire() const { return values_; }
  SparseAlgorithm algorithm() const { return algorithm_; }
  // Every rank must switch at the same call.
  void set_algorithm(SparseAlgorithm a) { algorithm_ = a; }
  // exchange "auto": sets algorithm() by the wire-cost model (core/src/exchange/wire_cost.h) from
  // the selection sizes averaged over ranks — one allreduce, so every rank picks the same even
  // where a threshold compressor's sizes differ between ranks — and returns what it compared,
  // in one line, for the log. Collective: every rank calls it at the same point. counts[i] is
  // this rank's entry count of a tensor of numels[i] entries.
  std::string choose_algorithm(const std::vector<int64_t>& counts, const std::vector<int64_t>& numels);

  // Writes every slot's average. With SparseSlot::reuse, clears only what the previous call
  // wrote (see SparseOutputState); without, clears the whole output first.
  void average_sparse(std::vector<SparseSlot>& slots, StepStats& stats);
  // Always writes the whole output (or the slot's coalesced list); a slot's `reuse` state, if
  // any, is reset.
  void average_shared(std::vector<SparseSlot>& slots, StepStats& stats);
  // The same two, into outputs the exchange keeps per SparseRequest::key (AverageOf): one
  // result per request, in order. The sparse route keeps its dense outputs zero between calls.
  std::vector<const AverageOf*> average_sparse(const std::vector<SparseRequest>& requests, StepStats& stats);
  std::vector<const AverageOf*> average_shared(const std::vector<SparseRequest>& requests, StepStats& stats);
  // In place: each tensor becomes the mean over ranks.
  void average_dense(std::vector<at::Tensor>& tensors, StepStats& stats);
  // True on every rank if `local_flag` is true on any rank.
  bool any_rank(bool local_flag);

  struct OutputPlan;  // internal to average_sparse: how it clears one output before decoding
  struct Layout;      // internal: where each slot's bytes lie in one rank's packed buffer
  enum class Written { Listed, ListedSorted, Everything };  // internal: how a decode left an output

 private:
  // The stages of average_sparse.
  void average_own(std::vector<SparseSlot>& slots);  // world size 1
  void average_reduced(std::vector<SparseSlot>& slots, StepStats& stats);  // SparseAlgorithm::SparseAllreduce
  at::ScalarType wire_type(const Compressed& c) const;  // the type its values travel as
  void check_and_return_rounding(std::vector<SparseSlot>& slots) const;
  std::vector<at::Tensor> gather_counts(const std::vector<SparseSlot>& slots, at::Tensor& counts, bool& counts_known);
  void pack(const std::vector<SparseSlot>& slots, const Layout& mine, int64_t packed_bytes);
  std::vector<Compressed> unpack(const SparseSlot& slot, int64_t i, const std::vector<at::Tensor>& all_counts,
                                 const std::vector<Layout>& layouts, std::vector<int>& from);
  void decode_mean(SparseSlot& slot, const OutputPlan& plan, const std::vector<Compressed>& parts,
                   const std::vector<int>& from);
  std::vector<SparseSlot> kept_slots(const std::vector<SparseRequest>& requests, bool keep_zero,
                                     std::vector<const AverageOf*>& outputs);
  std::vector<OutputPlan> begin_outputs(std::vector<SparseSlot>& slots, bool may_defer);
  static std::vector<int64_t>* record_into(SparseSlot& slot);
  void end_output(SparseSlot& slot, bool recorded, Written how);
  Communicator& comm_;
  IndexCoding coding_;
  ValueWire values_ = ValueWire::Native;
  SparseAlgorithm algorithm_ = SparseAlgorithm::Allgather;
  // The sparse path's byte buffers, kept from call to call: the same sizes come back every
  // step, and fresh ones would be page-faulted in each time (~1–2 ms for 25M·1 % over 2 ranks).
  at::Tensor packed_;
  std::vector<at::Tensor> gathered_;
  std::vector<at::Tensor> decoded_;  // Block16: each (slot, rank)'s indices, unpacked
  std::map<std::string, AverageOf> kept_;  // the outputs of the SparseRequest calls, by key
};

}  // namespace cddp
