// sparse_decode.h — the CPU loops that turn the ranks' sparse selections into their mean:
// into a dense output (sweep, merge, scatter; see mean_raw) or into a coalesced list
// (coalesce), and the sparse update add_sparse_ (declared in gradient_exchange.h). Internal to
// core/src/exchange.
//
// Every loop adds the ranks' values in rank order — ((+0 + v_rank0) + v_rank1 ...) / W — so
// every rank computes the same bits whichever loop runs. It will not communicate, allocate the
// outputs' memory, or keep state between calls: GradientExchange does.
#pragma once

#include <cddp/compressor.h>
#include <cddp/gradient_exchange.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace cddp::detail {

// What of an output may be non-zero before this call writes it: nothing, a list of entries
// (the previous call's), or everything (contents unknown, or the previous decode wrote all of
// it). Cleared before the decode (ZeroOutputs) or by it: the sweep overwrites everything, the
// merge re-zeroes a sorted list in passing, the other paths clear first.
struct Stale {
  const std::vector<int64_t>* list = nullptr;  // these entries (repeats allowed unless sorted)
  bool sorted = false;                         // list is strictly increasing
  bool everything = false;                     // any entry
  bool any() const { return everything || list; }
};

// Clears what `stale` names, so that the output is +0 everywhere.
void clear_stale(at::Tensor& t, const Stale& stale);

// The mean of `parts` (rank from[p]'s selection, in rank order) into the dense `avg`, also
// clearing `stale`. True when it wrote it, with how into *written; false (CPU float/double
// only) when it wrote nothing and the caller must decode through the codec. `touched`
// (optional) receives every index written, unless *written says Everything.
bool mean_raw(at::Tensor& avg, const std::vector<Compressed>& parts, const std::vector<int>& from, int world,
              std::vector<int64_t>* touched, const Stale& stale, GradientExchange::Written* written);

// The mean of `parts` as a coalesced list into `out` (CPU float/double; `local` gives numel,
// dtype and index dtype). Throws on an index outside [0, numel), naming the rank.
void coalesce(SparseAverage& out, const std::vector<Compressed>& parts, const std::vector<int>& from, int world,
              const Compressed& local);

}  // namespace cddp::detail
