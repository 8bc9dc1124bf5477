// gradient_exchange.cpp — packing, collectives, and which decode each output gets. The index
// coding is in index_coding.cpp, the decode loops in sparse_decode.cpp.
#include <cddp/gradient_exchange.h>

#include "index_coding.h"
#include "sparse_allreduce.h"
#include "sparse_decode.h"
#include "wire_cost.h"
#include "../ms_since.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <thread>

namespace cddp {

// Byte layout of one rank's packed selections, given that rank's counts.
struct GradientExchange::Layout {
  std::vector<int64_t> value_offset, index_offset;
  int64_t total = 0;
};

namespace {

using detail::clear_stale;
using detail::ring_allreduce_bytes;
using detail::Stale;
using detail::Clock;
using detail::ms_since;
using detail::pad8;

using Layout = GradientExchange::Layout;

// value_size[i]: the bytes of one of slot i's values on the wire (GradientExchange::wire_type).
Layout layout_for(const std::vector<SparseSlot>& slots, const int64_t* counts, IndexCoding coding,
                  const std::vector<int64_t>& value_size) {
  Layout l;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Compressed& c = *slots[i].local;
    const int64_t vsize = value_size[i];
    l.value_offset.push_back(l.total);
    l.total += pad8(counts[i] * vsize);
    l.index_offset.push_back(l.total);  // a multiple of 8: Block16's uint32 counts are aligned
    l.total += pad8(index_wire_bytes(counts[i], c.numel, coding));
  }
  return l;
}

at::Tensor as_bytes(const at::Tensor& t) { return t.contiguous().view(at::kByte); }

using Written = GradientExchange::Written;

}  // namespace

// What must happen to one output before its decode (see SparseOutputState).
struct GradientExchange::OutputPlan {
  Stale stale{nullptr, false, true};  // without a valid SparseOutputState: contents unknown
  bool deferred = false;              // the decode clears `stale`, not ZeroOutputs
};

namespace {

// Clears the outputs before the decode: the whole tensor, only the entries the previous call
// wrote, or nothing (deferred to the decode). Large clears run on a helper thread while the
// caller waits in the allgathers (a 25M-float output costs as much to clear as the sparse
// allgather takes). Joined before anything reads the outputs, and on every exit path. Small,
// sparse or non-CPU clears run inline.
class ZeroOutputs {
 public:
  using Plan = GradientExchange::OutputPlan;
  ZeroOutputs(std::vector<SparseSlot>& slots, const std::vector<Plan>& plans, bool may_overlap)
      : slots_(slots), plans_(plans) {
    int64_t work = 0;  // ~bytes of memory traffic: a scattered write costs a cache line
    bool cpu = true;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (plans_[i].deferred) continue;
      const Stale& st = plans_[i].stale;
      work += st.everything ? slots[i].average->numel() * slots[i].average->element_size()
                            : st.list ? int64_t(st.list->size()) * 64 : 0;
      cpu = cpu && slots[i].average->is_cpu();
    }
    if (!may_overlap || !cpu || work < (int64_t{4} << 20)) {
      run();
      return;
    }
    thread_ = std::thread([this] {
      try {
        run();
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }
  ~ZeroOutputs() {
    if (thread_.joinable()) thread_.join();
  }
  void wait() {
    if (thread_.joinable()) thread_.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run() {
    for (size_t i = 0; i < slots_.size(); ++i)
      if (!plans_[i].deferred) clear_stale(*slots_[i].average, plans_[i].stale);
  }

  std::vector<SparseSlot>& slots_;
  const std::vector<Plan>& plans_;
  std::thread thread_;
  std::exception_ptr error_;
};

int64_t version_of(const at::Tensor& t) { return t.is_inference() ? -1 : static_cast<int64_t>(t._version()); }

// True when a selection's mean can be written as a coalesced list (CPU float/double selections).
bool coalescable(const Compressed& c) {
  return (c.dtype == at::kFloat || c.dtype == at::kDouble) && (!c.values.defined() || c.values.is_cpu());
}

// An empty list: nothing to return.
void clear_list(SparseAverage& list, int64_t numel, at::ScalarType dtype) {
  list.numel = numel;
  list.indices = at::empty({0}, index_dtype_for(numel));
  list.values = at::empty({0}, at::TensorOptions().dtype(dtype));
  list.valid = true;
}

// True when the slot's mean goes to its coalesced list.
bool coalesces(const SparseSlot& s) { return s.coalesced && coalescable(*s.local); }

// The slot's coalesced list from this rank's own indices and `values` (its selection's at world
// size 1, the sum over ranks for shared indices): (+0 + value) / world at each index, the bits
// the dense decodes write there.
void coalesce_own(SparseSlot& s, const at::Tensor& values, int world, int rank) {
  const Compressed& c = *s.local;
  std::vector<Compressed> parts;
  std::vector<int> from;
  if (c.count() > 0) {  // as the wire would carry it: contiguous, the ABI's dtypes
    Compressed mine = c;
    mine.values = values.to(c.dtype).contiguous();
    mine.indices = c.indices.to(index_dtype_for(c.numel)).contiguous();
    parts.push_back(std::move(mine));
    from.push_back(rank);
  }
  detail::coalesce(*s.coalesced, parts, from, world, c);
}

}  // namespace

bool GradientExchange::any_rank(bool local_flag) {
  if (comm_.world_size() == 1) return local_flag;
  at::Tensor flag = at::full({1}, local_flag ? 1.0f : 0.0f, at::kFloat);
  comm_.allreduce_sum_(flag);
  return flag.item<float>() > 0.0f;
}

// Per slot: what to clear before the decode (OutputPlan). From here on every state says "not
// valid" until this call's decode of its slot has finished.
std::vector<GradientExchange::OutputPlan> GradientExchange::begin_outputs(std::vector<SparseSlot>& slots,
                                                                           bool may_defer) {
  std::vector<OutputPlan> plans(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    SparseOutputState* z = slots[i].reuse;
    if (slots[i].coalesced) slots[i].coalesced->valid = false;  // until this call's decode of it
    if (coalesces(slots[i])) {  // `average` is left alone: nothing to clear, and nothing it held is known
      plans[i].stale = Stale();
      plans[i].deferred = true;
      if (z) z->reset();
      continue;
    }
    if (!z) continue;
    const at::Tensor& a = *slots[i].average;
    const at::Tensor& o = z->output_;
    if (z->valid_ && o.defined() && a.is_cpu() && a.is_contiguous() && o.is_alias_of(a) &&
        o.storage_offset() == a.storage_offset() && o.numel() == a.numel() && o.scalar_type() == a.scalar_type() &&
        version_of(a) == z->version_) {
      plans[i].stale = z->whole_ ? Stale{nullptr, false, true} : Stale{&z->touched_, z->sorted_, false};
      plans[i].deferred = may_defer;
    }
    z->valid_ = false;
  }
  return plans;
}

// Where the slot's decode records the entries it writes (its state's spare list), or null.
std::vector<int64_t>* GradientExchange::record_into(SparseSlot& s) {
  if (!s.reuse || !s.average->is_cpu() || !s.average->is_contiguous()) return nullptr;
  s.reuse->spare_.clear();
  return &s.reuse->spare_;
}

// The slot's output now holds this call's result. Moves its version counter (the output was
// written in place), and records for the next call what it must clear: everything, when the
// decode wrote every entry; else, when `recorded` (record_into's list holds every entry
// written), that list.
void GradientExchange::end_output(SparseSlot& slot, bool recorded, Written how) {
  at::Tensor& a = *slot.average;
  if (!a.is_inference()) a.unsafeGetTensorImpl()->bump_version();
  SparseOutputState* z = slot.reuse;
  if (!z) return;
  if (how == Written::Everything) {
    z->touched_.clear();
  } else if (!recorded || z->spare_.size() * 16 > static_cast<size_t>(a.numel())) {
    z->reset();  // unknown, or too dense to pay: the next call clears fully
    return;
  } else {
    std::swap(z->touched_, z->spare_);
  }
  z->whole_ = how == Written::Everything;
  z->sorted_ = how == Written::ListedSorted;
  z->output_ = a;
  z->version_ = version_of(a);
  z->valid_ = true;
}

// World size 1: each slot's mean is its own selection, decoded by its codec (or coalesced).
void GradientExchange::average_own(std::vector<SparseSlot>& slots) {
  const std::vector<OutputPlan> plans = begin_outputs(slots, /*may_defer=*/false);
  ZeroOutputs zeroing(slots, plans, /*may_overlap=*/false);
  for (auto& s : slots) {
    if (coalesces(s)) {
      coalesce_own(s, s.local->values, 1, 0);
      continue;
    }
    std::vector<int64_t>* written = record_into(s);
    // decompress_add_ writes dense.view(-1)[indices] and nothing else (Compressor's contract)
    s.codec->decompress_add_(*s.local, *s.average);
    if (written && s.local->count() > 0) {
      at::Tensor idx = s.local->indices.to(at::kLong).contiguous();
      written->assign(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
    }
    end_output(s, written != nullptr, Written::Listed);
  }
}

// Every rank's count per slot: known already when every slot declares its expected count (then
// checked here, before any collective), else allgathered. `counts` receives this rank's.
std::vector<at::Tensor> GradientExchange::gather_counts(const std::vector<SparseSlot>& slots, at::Tensor& counts,
                                                        bool& counts_known) {
  const int64_t P = static_cast<int64_t>(slots.size());
  counts = at::empty({P}, at::kLong);
  counts_known = true;
  for (int64_t i = 0; i < P; ++i) {
    counts.data_ptr<int64_t>()[i] = slots[i].local->count();
    counts_known = counts_known && slots[i].expected_count >= 0;
  }
  if (!counts_known) return comm_.allgather(counts);
  for (int64_t i = 0; i < P; ++i)  // every rank knows every count already: no collective needed
    TORCH_CHECK(slots[i].local->count() == slots[i].expected_count, "sparse exchange: slot ", i, " selected ",
                slots[i].local->count(), " entries but every rank expects ", slots[i].expected_count,
                " (a compressor whose count varies must not declare a fixed count)");
  return std::vector<at::Tensor>(static_cast<size_t>(comm_.world_size()), counts);
}

// This rank's values and indices at their places in packed_ (`mine`), indices as the coding
// says; Block16 regroups a list by block, and its values follow.
void GradientExchange::pack(const std::vector<SparseSlot>& slots, const Layout& mine, int64_t packed_bytes) {
  if (!packed_.defined() || packed_.numel() != packed_bytes) packed_ = at::zeros({packed_bytes}, at::kByte);
  at::Tensor& packed = packed_;  // bytes outside this call's value and index ranges are never read
  std::vector<int64_t> order;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Compressed& c = *slots[i].local;
    const int64_t n = c.count();
    if (n == 0) continue;
    // The packed buffer is host memory: a selection made on a GPU is brought over first (the
    // index coding and the reorder below read raw host pointers).
    at::Tensor vb = as_bytes(c.values.to(at::kCPU, wire_type(c))),
               idx = c.indices.to(at::kCPU, index_dtype_for(c.numel)).contiguous();
    order.clear();
    if (detail::block16(coding_, n, c.numel))
      detail::encode_block16(idx, c.numel, packed.data_ptr<uint8_t>() + mine.index_offset[i], order);
    else
      packed.narrow(0, mine.index_offset[i], n * idx.element_size()).copy_(as_bytes(idx));
    if (order.empty()) {
      packed.narrow(0, mine.value_offset[i], vb.numel()).copy_(vb);
    } else {  // the values follow their indices into block order
      const size_t es = c10::elementSize(wire_type(c));
      const uint8_t* from = vb.data_ptr<uint8_t>();
      uint8_t* to = packed.data_ptr<uint8_t>() + mine.value_offset[i];
      for (size_t pos = 0; pos < order.size(); ++pos) std::memcpy(to + pos * es, from + order[pos] * es, es);
    }
  }
}

// Slot i's selection from each rank that sent any, in rank order (`from` the ranks), viewed in
// gathered_ (Block16 indices decoded into decoded_, reused from call to call).
std::vector<Compressed> GradientExchange::unpack(const SparseSlot& slot, int64_t i,
                                                 const std::vector<at::Tensor>& all_counts,
                                                 const std::vector<Layout>& layouts, std::vector<int>& from) {
  const int world = comm_.world_size();
  const Compressed& local = *slot.local;
  const at::ScalarType it = index_dtype_for(local.numel);
  std::vector<Compressed> parts;
  from.clear();
  for (int r = 0; r < world; ++r) {
    const int64_t n = all_counts[r].data_ptr<int64_t>()[i];
    if (n == 0) continue;
    Compressed c;
    c.numel = local.numel;
    c.shape = local.shape;
    c.dtype = local.dtype;
    const at::ScalarType wt = wire_type(local);
    c.values = gathered_[r].narrow(0, layouts[r].value_offset[i], n * c10::elementSize(wt)).view(wt);
    if (wt != c.dtype) c.values = c.values.to(c.dtype);  // exact: a 16-bit value widens losslessly
    if (detail::block16(coding_, n, local.numel)) {
      at::Tensor& idx = decoded_[static_cast<size_t>(i * world + r)];
      if (!idx.defined() || idx.scalar_type() != it) idx = at::empty({0}, it);
      idx.resize_({n});  // reused from call to call
      const uint8_t* src = gathered_[r].data_ptr<uint8_t>() + layouts[r].index_offset[i];
      detail::decode_block16(src, n, local.numel, idx, r);
      c.indices = idx;
    } else {
      c.indices = gathered_[r].narrow(0, layouts[r].index_offset[i], n * c10::elementSize(it)).view(it);
    }
    parts.push_back(std::move(c));
    from.push_back(r);
  }
  return parts;
}

// The mean of `parts` into the slot's output (or its coalesced list), clearing what the plan
// deferred to the decode. The library's loops for CPU float/double (mean_raw), else the codec's
// decode and ATen's division.
void GradientExchange::decode_mean(SparseSlot& slot, const OutputPlan& plan, const std::vector<Compressed>& parts,
                                   const std::vector<int>& from) {
  const int world = comm_.world_size();
  if (coalesces(slot)) {
    detail::coalesce(*slot.coalesced, parts, from, world, *slot.local);
    return;
  }
  at::Tensor& avg = *slot.average;
  std::vector<int64_t>* written = record_into(slot);
  const Stale stale = plan.deferred ? plan.stale : Stale();  // what the decode still has to clear
  if (parts.empty()) {  // nothing sent: the output is all +0
    clear_stale(avg, stale);
    end_output(slot, written != nullptr, Written::ListedSorted);
    return;
  }
  Written how = Written::Listed;
  if (detail::mean_raw(avg, parts, from, world, written, stale, &how)) {
    end_output(slot, written != nullptr, how);
    return;
  }
  clear_stale(avg, stale);  // mean_raw wrote nothing
  // Other dtypes and devices: the codec's own decode, and ATen for the division. The parts are
  // views of the host buffers gathered: an output on a GPU gets them copied over.
  std::vector<Compressed> on_device;
  if (!avg.is_cpu())
    for (Compressed c : parts) {
      c.values = c.values.to(avg.device());
      c.indices = c.indices.to(avg.device());
      on_device.push_back(std::move(c));
    }
  const std::vector<Compressed>& use = avg.is_cpu() ? parts : on_device;
  int64_t touched = 0;
  for (const auto& c : use) {
    slot.codec->decompress_add_(c, avg);
    touched += c.count();
  }
  if (touched * 8 >= avg.numel()) {
    avg.div_(world);
  } else {  // index_select reads every entry before index_put_ writes: duplicates are harmless
    std::vector<at::Tensor> longs;
    for (const auto& c : use) longs.push_back(c.indices.to(at::kLong));
    at::Tensor idx = at::cat(longs);
    at::Tensor flat = avg.view(-1);
    flat.index_put_({idx}, flat.index_select(0, idx).div_(world));
  }
  if (written)  // decompress_add_ wrote the selected entries only; +0 / W is +0 elsewhere
    for (const auto& c : parts) {
      at::Tensor idx = c.indices.to(at::kCPU, at::kLong).contiguous();
      written->insert(written->end(), idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
    }
  end_output(slot, written != nullptr, Written::Listed);
}

at::ScalarType GradientExchange::wire_type(const Compressed& c) const {
  if (c.dtype != at::kFloat && c.dtype != at::kDouble) return c.dtype;
  return values_ == ValueWire::BFloat16 ? at::kBFloat16 : values_ == ValueWire::Half ? at::kHalf : c.dtype;
}

// Each slot's `returned`: v − round(v) wherever rounding to the wire type changed a value
// (exact: v and round(v) are within a factor 2, Sterbenz). fp16 overflow is refused here,
// before any collective.
void GradientExchange::check_and_return_rounding(std::vector<SparseSlot>& slots) const {
  for (size_t i = 0; i < slots.size(); ++i) {
    const Compressed& c = *slots[i].local;
    const at::ScalarType wt = wire_type(c);
    if (wt == c.dtype) {
      if (slots[i].returned) clear_list(*slots[i].returned, c.numel, c.dtype);
      continue;
    }
    TORCH_CHECK(slots[i].returned, "sparse exchange: slot ", i, " sends its values as ", wt,
                " but gives no SparseSlot::returned for the rounding: it would be lost");
    at::Tensor v = c.count() ? c.values.to(at::kCPU, c.dtype).reshape(-1) : at::empty({0}, at::TensorOptions().dtype(c.dtype));
    if (wt == at::kHalf && v.numel() > 0) {
      const double peak = v.abs().max().item<double>();
      TORCH_CHECK(!(peak > 65504.0), "value_dtype \"fp16\": slot ", i, " of the sparse exchange holds a value of",
                  " magnitude ", peak, ", beyond fp16's largest finite value 65504 (it would arrive as Inf); use",
                  " \"bf16\", which has fp32's range, or \"fp32\"");
    }
    at::Tensor diff = v - v.to(wt).to(c.dtype);
    at::Tensor nz = diff.ne(0).nonzero().reshape(-1);
    SparseAverage& back = *slots[i].returned;
    back.numel = c.numel;
    back.indices = c.indices.to(at::kCPU).reshape(-1).index_select(0, nz).to(index_dtype_for(c.numel));
    back.values = diff.index_select(0, nz);
    back.valid = true;
  }
}

// SparseAlgorithm::SparseAllreduce (sparse_allreduce.h): the mean as a coalesced list, written
// into a dense output where the slot has no coalesced one.
void GradientExchange::average_reduced(std::vector<SparseSlot>& slots, StepStats& stats) {
  auto t0 = Clock::now();
  std::vector<SparseAverage> lists(slots.size());
  std::vector<detail::SparseAllreduceSlot> parts;
  for (size_t i = 0; i < slots.size(); ++i) {
    SparseSlot& s = slots[i];
    TORCH_CHECK(coalescable(*s.local),
                "sparse allreduce: slot ", i, " is a ", s.local->dtype, " selection",
                (s.local->values.defined() ? " on " + s.local->values.device().str() : std::string()),
                "; it reduces CPU float and double selections only (use exchange \"allgather\")");
    TORCH_CHECK(s.returned, "sparse allreduce: slot ", i, " gives no SparseSlot::returned for the entries the",
                " re-selection drops: they would be lost");
    if (s.reuse) s.reuse->reset();
    if (s.coalesced) s.coalesced->valid = false;
    parts.push_back({s.local, coalesces(s) ? s.coalesced : &lists[i], s.returned});
  }
  detail::SparseAllreduce(comm_, values_).run(parts, stats);
  for (size_t i = 0; i < slots.size(); ++i) {
    if (coalesces(slots[i])) continue;
    at::Tensor& avg = *slots[i].average;
    TORCH_CHECK(avg.is_cpu() && avg.is_contiguous(), "sparse allreduce: slot ", i, "'s output must be CPU-contiguous");
    avg.zero_();
    add_sparse_(avg.view(-1), lists[i], 1.0);  // +0 + 1·mean: the mean's bits at each entry
  }
  stats.comm_ms += ms_since(t0);
}

void GradientExchange::average_sparse(std::vector<SparseSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  auto t0 = Clock::now();
  int64_t payload = 0;
  for (auto& s : slots) payload += s.local->wire_bytes();
  if (world == 1) {
    for (auto& s : slots)  // nothing reaches a wire: nothing rounded, nothing returned
      if (s.returned) clear_list(*s.returned, s.local->numel, s.local->dtype);
    average_own(slots);
    stats.payload_bytes += payload;
    stats.bytes_sent += payload;
    stats.comm_ms += ms_since(t0);
    return;
  }

  // 1. Counts: selections may differ in size between ranks (threshold compressors), and
  //    an empty selection must still take part, or the collective would hang.
  if (algorithm_ == SparseAlgorithm::SparseAllreduce) {
    average_reduced(slots, stats);
    return;
  }
  const int64_t P = static_cast<int64_t>(slots.size());
  check_and_return_rounding(slots);  // before any collective: an fp16 overflow stops here
  std::vector<int64_t> value_size;
  for (const auto& s : slots) {
    value_size.push_back(int64_t(c10::elementSize(wire_type(*s.local))));
    payload -= s.local->count() * (int64_t(c10::elementSize(s.local->dtype)) - value_size.back());  // real bytes
  }
  const std::vector<OutputPlan> plans = begin_outputs(slots, /*may_defer=*/true);
  ZeroOutputs zeroing(slots, plans, /*may_overlap=*/true);  // overlaps the two allgathers
  at::Tensor counts;
  bool counts_known = false;
  const std::vector<at::Tensor> all_counts = gather_counts(slots, counts, counts_known);
  std::vector<Layout> layouts;
  int64_t max_total = 0;
  for (int r = 0; r < world; ++r) {
    at::Tensor c = all_counts[r].contiguous();
    layouts.push_back(layout_for(slots, c.data_ptr<int64_t>(), coding_, value_size));
    max_total = std::max(max_total, layouts.back().total);
  }

  // 2. Pack this rank's values and indices into one padded byte buffer; gather it.
  pack(slots, layouts[comm_.rank()], std::max<int64_t>(max_total, 8));
  comm_.allgather_into(packed_, gathered_);

  // 3. Decode in rank order, so every rank adds the same numbers in the same order, then
  //    divide by W. Entries no rank selected are +0 and stay +0, so when few entries were
  //    touched only those are divided: the same bits as a full div_, without another pass
  //    over the whole tensor.
  zeroing.wait();
  decoded_.resize(static_cast<size_t>(P * world));
  std::vector<int> from;
  for (int64_t i = 0; i < P; ++i) {
    const std::vector<Compressed> parts = unpack(slots[i], i, all_counts, layouts, from);
    decode_mean(slots[i], plans[i], parts, from);
  }

  const int64_t count_bytes = counts_known ? 0 : counts.numel() * 8;
  const int64_t sent = packed_.numel() + count_bytes;
  stats.payload_bytes += payload + count_bytes;
  stats.bytes_sent += sent;
  stats.bytes_received += (world - 1) * sent;
  stats.comm_ms += ms_since(t0);
}

// The slots of `requests`, over the outputs kept under their keys. A dense output is
// (re)allocated when its size, dtype or device no longer fit the selection, which forgets what
// its state knew; with `keep_zero` false (average_shared writes all of it) the state is reset
// anyway. A coalesced request leaves the kept dense output and its state alone.
std::vector<SparseSlot> GradientExchange::kept_slots(const std::vector<SparseRequest>& requests, bool keep_zero,
                                                     std::vector<const AverageOf*>& outputs) {
  std::vector<SparseSlot> slots;
  outputs.clear();
  for (const SparseRequest& r : requests) {
    AverageOf& kept = kept_[r.key];
    SparseSlot slot{r.local, r.codec, &kept.tensor_, nullptr, r.expected_count, nullptr, &kept.returned_};
    if (r.coalesce && coalescable(*r.local)) {
      slot.coalesced = &kept.list_;
    } else {
      const auto opts = r.local->values.options();
      at::Tensor& t = kept.tensor_;
      if (!t.defined() || t.numel() != r.local->numel || t.scalar_type() != opts.dtype().toScalarType() ||
          t.device() != opts.device()) {
        kept.zeros_.reset();
        t = at::empty({r.local->numel}, opts);
      }
      if (keep_zero) slot.reuse = &kept.zeros_;
      else kept.zeros_.reset();
      kept.list_.valid = false;  // this call's result is the dense one
    }
    slots.push_back(slot);
    outputs.push_back(&kept);
  }
  return slots;
}

std::vector<const AverageOf*> GradientExchange::average_sparse(const std::vector<SparseRequest>& requests,
                                                               StepStats& stats) {
  std::vector<const AverageOf*> outputs;
  std::vector<SparseSlot> slots = kept_slots(requests, /*keep_zero=*/true, outputs);
  average_sparse(slots, stats);
  return outputs;
}

std::vector<const AverageOf*> GradientExchange::average_shared(const std::vector<SparseRequest>& requests,
                                                               StepStats& stats) {
  std::vector<const AverageOf*> outputs;
  std::vector<SparseSlot> slots = kept_slots(requests, /*keep_zero=*/false, outputs);
  average_shared(slots, stats);
  return outputs;
}

void GradientExchange::average_shared(std::vector<SparseSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  auto t0 = Clock::now();
  // Group by value dtype so each group is one allreduce.
  std::map<at::ScalarType, std::vector<size_t>> groups;
  for (size_t i = 0; i < slots.size(); ++i) groups[slots[i].local->dtype].push_back(i);
  for (auto& [dtype, members] : groups) {
    std::vector<at::Tensor> parts;
    for (size_t i : members) parts.push_back(slots[i].local->values.reshape(-1).to(dtype));
    at::Tensor sum = at::cat(parts);
    const int64_t bytes = sum.numel() * static_cast<int64_t>(sum.element_size());
    stats.payload_bytes += bytes;
    if (world > 1) {
      comm_.allreduce_sum_(sum);
      stats.bytes_sent += ring_allreduce_bytes(bytes, world);
      stats.bytes_received += ring_allreduce_bytes(bytes, world);
    } else {
      stats.bytes_sent += bytes;
    }
    int64_t off = 0;
    for (size_t i : members) {
      const Compressed& local = *slots[i].local;
      Compressed c = local;
      c.values = sum.narrow(0, off, local.count());
      off += local.count();
      if (slots[i].reuse) slots[i].reuse->reset();
      if (slots[i].coalesced) slots[i].coalesced->valid = false;
      if (slots[i].returned) clear_list(*slots[i].returned, local.numel, local.dtype);  // values sum as they are
      if (coalesces(slots[i])) {  // the same indices on every rank: (+0 + sum) / W at each
        coalesce_own(slots[i], c.values, world, comm_.rank());
        continue;
      }
      slots[i].average->zero_();
      slots[i].codec->decompress_add_(c, *slots[i].average);
      if (world > 1) slots[i].average->div_(world);
    }
  }
  stats.comm_ms += ms_since(t0);
}

void GradientExchange::average_dense(std::vector<at::Tensor>& tensors, StepStats& stats) {
  if (tensors.empty()) return;
  const int world = comm_.world_size();
  auto t0 = Clock::now();
  std::map<at::ScalarType, std::vector<size_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i) groups[tensors[i].scalar_type()].push_back(i);
  for (auto& [dtype, members] : groups) {
    int64_t bytes = 0;
    for (size_t i : members) bytes += tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
    stats.payload_bytes += bytes;
    if (world == 1) {  // the mean over one rank is the tensor itself: leave the bits alone
      stats.bytes_sent += bytes;
      continue;
    }
    std::vector<at::Tensor> flat;
    for (size_t i : members) flat.push_back(tensors[i].reshape(-1));
    at::Tensor buffer = at::cat(flat);  // one coalesced collective per dtype
    comm_.allreduce_sum_(buffer);
    buffer.div_(world);
    int64_t off = 0;
    for (size_t i : members) {
      tensors[i].copy_(buffer.narrow(0, off, tensors[i].numel()).view(tensors[i].sizes()));
      off += tensors[i].numel();
    }
    stats.bytes_sent += ring_allreduce_bytes(bytes, world);
    stats.bytes_received += ring_allreduce_bytes(bytes, world);
  }
  stats.comm_ms += ms_since(t0);
}

std::string GradientExchange::choose_algorithm(const std::vector<int64_t>& counts,
                                               const std::vector<int64_t>& numels) {
  at::Tensor k = at::tensor(counts, at::kDouble);
  comm_.allreduce_sum_(k);
  const int W = comm_.world_size();
  std::vector<int64_t> mean_counts;
  const double* sum = k.data_ptr<double>();
  for (int64_t i = 0; i < k.numel(); ++i) mean_counts.push_back(int64_t(std::ceil(sum[i] / W)));
  std::string why;
  algorithm_ = detail::choose_sparse_algorithm(mean_counts, numels, values_, coding_, W, why);
  return why;
}

}  // namespace cddp
