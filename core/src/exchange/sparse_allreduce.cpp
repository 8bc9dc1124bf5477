// sparse_allreduce.cpp — the region-wise reduce-scatter, re-selection and allgather of
// sparse_allreduce.h.
#include "sparse_allreduce.h"

#include "index_coding.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace cddp::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Region r of an n-entry tensor at W ranks: [region_begin(r), region_begin(r + 1)).
int64_t region_begin(int64_t n, int world, int r) { return (n / world) * r + std::min<int64_t>(r, n % world); }
int64_t region_size(int64_t n, int world, int r) { return region_begin(n, world, r + 1) - region_begin(n, world, r); }

// `count` sorted offsets into a region of `size` entries travel Block16-coded (index_coding.h:
// 4 bytes a 65,536-entry block, then 2 an offset) when that is smaller than 4 bytes each, as
// uint32 otherwise. Sender and receiver both know count and size, so both make the same choice.
bool offsets_block16(int64_t count, int64_t size) { return count > 0 && block16_bytes(count, size) < 4 * count; }
int64_t offset_bytes(int64_t count, int64_t size) { return offsets_block16(count, size) ? block16_bytes(count, size) : 4 * count; }

// Writes offsets[0..n) (sorted) as offset_bytes(capacity, size) says for `capacity` entries:
// Block16 with its header for n, or uint32s; the caller pads from n up to capacity.
void put_offsets(std::vector<uint8_t>& buf, const std::vector<int64_t>& offsets, int64_t capacity, int64_t size) {
  const int64_t n = static_cast<int64_t>(offsets.size());
  const size_t at = buf.size();
  buf.resize(at + static_cast<size_t>(offset_bytes(capacity, size)), 0);
  if (n == 0) return;
  if (offsets_block16(capacity, size)) {  // coded in an aligned buffer: the message has no alignment
    std::vector<int64_t> order;
    std::vector<uint64_t> coded(static_cast<size_t>(block16_bytes(n, size) + 7) / 8);
    at::Tensor t = at::from_blob(const_cast<int64_t*>(offsets.data()), {n}, at::kLong);
    encode_block16(t, size, reinterpret_cast<uint8_t*>(coded.data()), order);
    TORCH_INTERNAL_ASSERT(order.empty(), "sparse allreduce: region offsets must arrive sorted");
    std::memcpy(buf.data() + at, coded.data(), static_cast<size_t>(block16_bytes(n, size)));
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t off = static_cast<uint32_t>(offsets[j]);
      std::memcpy(buf.data() + at + 4 * j, &off, 4);
    }
  }
}

// The inverse, for n entries written with `capacity` (sent by rank `from`).
std::vector<uint32_t> get_offsets(const uint8_t* src, int64_t n, int64_t capacity, int64_t size, int from) {
  std::vector<uint32_t> out(static_cast<size_t>(n));
  if (n == 0) return out;
  if (offsets_block16(capacity, size)) {
    std::vector<uint64_t> coded(static_cast<size_t>(block16_bytes(n, size) + 7) / 8);
    std::memcpy(coded.data(), src, static_cast<size_t>(block16_bytes(n, size)));
    at::Tensor t = at::empty({n}, at::kLong);
    decode_block16(reinterpret_cast<const uint8_t*>(coded.data()), n, size, t, from);
    const int64_t* p = t.data_ptr<int64_t>();
    for (int64_t j = 0; j < n; ++j) out[j] = static_cast<uint32_t>(p[j]);
  } else {
    std::memcpy(out.data(), src, static_cast<size_t>(n) * 4);
  }
  return out;
}

at::ScalarType step2_type(ValueWire w, at::ScalarType dtype) {
  return w == ValueWire::BFloat16 ? at::kBFloat16 : w == ValueWire::Half ? at::kHalf : dtype;
}
// fp16 sums travel as the selection's dtype: W fp16 values can sum past fp16's range.
at::ScalarType step4_type(ValueWire w, at::ScalarType dtype) { return w == ValueWire::Half ? dtype : step2_type(w, dtype); }

// This rank's selection of one tensor, sorted by index (stable: repeats keep their order),
// and where each owner's region starts in it.
struct SortedLocal {
  std::vector<int64_t> index;
  at::Tensor values;          // in the selection's dtype, in `index` order
  at::Tensor wire;            // the same values in the step-2 wire type
  std::vector<int64_t> from;  // [W + 1]: region r's entries are [from[r], from[r + 1])
};

SortedLocal sort_local(const Compressed& c, int world, at::ScalarType wire) {
  SortedLocal s;
  const int64_t k = c.count();
  at::Tensor idx = k ? c.indices.to(at::kCPU, at::kLong).contiguous() : at::empty({0}, at::kLong);
  std::vector<int64_t> order(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) order[j] = j;
  const int64_t* ip = idx.data_ptr<int64_t>();
  std::stable_sort(order.begin(), order.end(), [ip](int64_t a, int64_t b) { return ip[a] < ip[b]; });
  s.index.resize(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) s.index[j] = ip[order[j]];
  at::Tensor perm = at::from_blob(order.data(), {k}, at::kLong).clone();
  s.values = k ? c.values.to(at::kCPU, c.dtype).reshape(-1).index_select(0, perm).contiguous()
               : at::empty({0}, at::TensorOptions().dtype(c.dtype));
  s.wire = s.values.to(wire).contiguous();
  s.from.resize(static_cast<size_t>(world) + 1);
  for (int r = 0; r <= world; ++r)
    s.from[r] = std::lower_bound(s.index.begin(), s.index.end(), region_begin(c.numel, world, r)) - s.index.begin();
  return s;
}

// fp16 holds magnitudes up to 65504: a larger value would arrive as Inf. Refused before any
// collective, naming the tensor, rather than sent.
void check_fits_half(const SortedLocal& s, size_t slot) {
  if (s.values.numel() == 0) return;
  const double peak = s.values.abs().max().item<double>();
  TORCH_CHECK(!(peak > 65504.0), "compression.value_dtype \"fp16\": tensor ", slot, " of the sparse exchange has a",
              " value of magnitude ", peak, ", beyond fp16's largest finite value 65504; use \"bf16\" (fp32's range)",
              " or \"fp32\", or lower the learning rate / clip gradients");
}

// One owner's region of one tensor after the reduce-scatter: the kept (offset, sum) pairs,
// sorted by offset, and the sums rounded to the step-4 wire type.
struct KeptRegion {
  std::vector<uint32_t> offset;
  at::Tensor sums;  // [kept] in the selection's dtype, exact
  at::Tensor wire;  // [kept] in the step-4 type
};

// Sums what every rank sent this owner for one tensor, per offset in rank order from +0, and
// keeps the `budget` largest magnitudes (ties: the lower offset).
template <typename T>
KeptRegion reduce_region(const std::vector<std::vector<uint32_t>>& offsets, const std::vector<at::Tensor>& values,
                         int64_t budget, at::ScalarType kept_type) {
  struct Entry {
    uint32_t offset, seq;
    T value;
  };
  std::vector<Entry> all;
  uint32_t seq = 0;
  for (size_t s = 0; s < offsets.size(); ++s) {
    const T* v = values[s].data_ptr<T>();
    for (int64_t j = 0, n = values[s].numel(); j < n; ++j) all.push_back({offsets[s][j], seq++, v[j]});
  }
  std::sort(all.begin(), all.end(),
            [](const Entry& a, const Entry& b) { return a.offset != b.offset ? a.offset < b.offset : a.seq < b.seq; });
  std::vector<uint32_t> off;
  std::vector<T> sum;
  for (size_t j = 0; j < all.size(); ++j) {  // rank order within an offset: ((+0 + v_0) + v_1) ...
    if (j == 0 || all[j].offset != all[j - 1].offset) {
      off.push_back(all[j].offset);
      sum.push_back(T(0));
    }
    sum.back() = sum.back() + all[j].value;
  }
  std::vector<size_t> keep(off.size());
  for (size_t j = 0; j < keep.size(); ++j) keep[j] = j;
  if (static_cast<int64_t>(keep.size()) > budget) {
    auto larger = [&](size_t a, size_t b) {
      const T ma = std::abs(sum[a]), mb = std::abs(sum[b]);
      return ma != mb ? ma > mb : off[a] < off[b];
    };
    std::nth_element(keep.begin(), keep.begin() + budget, keep.end(), larger);
    keep.resize(static_cast<size_t>(budget));
    std::sort(keep.begin(), keep.end());  // back to offset order
  }
  KeptRegion k;
  k.sums = at::empty({static_cast<int64_t>(keep.size())}, c10::CppTypeToScalarType<T>::value);
  T* out = k.sums.data_ptr<T>();
  for (size_t j = 0; j < keep.size(); ++j) {
    k.offset.push_back(off[keep[j]]);
    out[j] = sum[keep[j]];
  }
  k.wire = k.sums.to(kept_type).contiguous();
  return k;
}

void append_bytes(std::vector<uint8_t>& buf, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  buf.insert(buf.end(), b, b + n);
}

// Entries into a SparseAverage (indices in the tensor's index dtype).
void fill(SparseAverage& out, const std::vector<int64_t>& index, const at::Tensor& values, int64_t numel) {
  const int64_t m = static_cast<int64_t>(index.size());
  out.numel = numel;
  // A copy: `index` dies with the call (.to() alone would alias it when the dtype is already int64).
  out.indices = at::from_blob(const_cast<int64_t*>(index.data()), {m}, at::kLong).to(index_dtype_for(numel)).clone();
  out.values = values.contiguous();
  out.valid = true;
}


// What every phase of one run() reads.
struct Call {
  int W = 0, me = 0;
  int64_t P = 0;
  ValueWire values = ValueWire::Native;
  std::vector<SparseAllreduceSlot>* slots = nullptr;
  std::vector<SortedLocal> mine;  // per tensor, this rank's selection sorted by index
  at::Tensor counts_in;           // [W][2][P]: from rank s, entries for me of tensor i; then k_s of tensor i
  std::vector<int64_t> budget;    // per tensor: ceil(max_s k_s / W)
  const Compressed& local(int64_t i) const { return *(*slots)[i].local; }
  int64_t count_from(int s, int64_t i) const { return counts_in.data_ptr<int64_t>()[(s * 2 + 0) * P + i]; }
  int64_t k_of(int s, int64_t i) const { return counts_in.data_ptr<int64_t>()[(s * 2 + 1) * P + i]; }
  at::ScalarType wire(int64_t i) const { return step2_type(values, local(i).dtype); }
  at::ScalarType kept_type(int64_t i) const { return step4_type(values, local(i).dtype); }
};

// Checks every selection, sorts it by index; returns this rank's payload bytes.
int64_t sort_selections(Call& call) {
  int64_t payload = 0;
  for (int64_t i = 0; i < call.P; ++i) {
    const Compressed& c = call.local(i);
    TORCH_CHECK(c.dtype == at::kFloat || c.dtype == at::kDouble, "sparse allreduce: tensor ", i, " has ", c.dtype,
                " values; it reduces float and double selections only");
    TORCH_CHECK(c.numel / call.W < (int64_t{1} << 32), "sparse allreduce: tensor ", i, " of ", c.numel,
                " entries has regions too large for 32-bit offsets at ", call.W, " ranks");
    call.mine.push_back(sort_local(c, call.W, call.wire(i)));
    if (call.values == ValueWire::Half) check_fits_half(call.mine.back(), static_cast<size_t>(i));
    const SortedLocal& mine = call.mine.back();
    payload += c.count() * int64_t(c10::elementSize(call.wire(i)));
    for (int r = 0; r < call.W; ++r) payload += offset_bytes(mine.from[r + 1] - mine.from[r], region_size(c.numel, call.W, r));
  }
  return payload;
}

// 1. Counts: to owner r, per tensor, how many entries it gets from this rank, then this rank's k
//    (every rank learns every k, so every rank computes the same budgets).
void exchange_counts(Call& call, Communicator& comm) {
  const int W = call.W;
  const int64_t P = call.P;
  at::Tensor out = at::empty({W * 2 * P}, at::kLong);
  int64_t* co = out.data_ptr<int64_t>();
  for (int r = 0; r < W; ++r)
    for (int64_t i = 0; i < P; ++i) {
      co[(r * 2 + 0) * P + i] = call.mine[i].from[r + 1] - call.mine[i].from[r];
      co[(r * 2 + 1) * P + i] = call.local(i).count();
    }
  const std::vector<int64_t> equal(static_cast<size_t>(W), 2 * P);
  call.counts_in = comm.alltoall(out, equal, equal);
  call.budget.assign(static_cast<size_t>(P), 0);
  for (int s = 0; s < W; ++s)
    for (int64_t i = 0; i < P; ++i) call.budget[i] = std::max(call.budget[i], call.k_of(s, i));
  for (auto& b : call.budget) b = (b + W - 1) / W;
}

// 2. Reduce-scatter: to owner r, per tensor, its entries' offsets in r's region (uint32), then
//    their values in the wire type. Returns what arrived, rank after rank.
at::Tensor scatter(const Call& call, Communicator& comm, std::vector<int64_t>& send_bytes,
                   std::vector<int64_t>& recv_bytes) {
  std::vector<uint8_t> send;
  send_bytes.assign(static_cast<size_t>(call.W), 0);
  recv_bytes.assign(static_cast<size_t>(call.W), 0);
  for (int r = 0; r < call.W; ++r) {
    const size_t before = send.size();
    for (int64_t i = 0; i < call.P; ++i) {
      const SortedLocal& s = call.mine[i];
      const int64_t numel = call.local(i).numel, lo = region_begin(numel, call.W, r);
      std::vector<int64_t> offsets;
      for (int64_t j = s.from[r]; j < s.from[r + 1]; ++j) offsets.push_back(s.index[j] - lo);
      put_offsets(send, offsets, static_cast<int64_t>(offsets.size()), region_size(numel, call.W, r));
      const size_t vb = s.wire.element_size();
      append_bytes(send, static_cast<const uint8_t*>(s.wire.data_ptr()) + s.from[r] * vb,
                   (s.from[r + 1] - s.from[r]) * vb);
    }
    send_bytes[r] = static_cast<int64_t>(send.size() - before);
  }
  for (int s = 0; s < call.W; ++s)
    for (int64_t i = 0; i < call.P; ++i) {
      const int64_t n = call.count_from(s, i);
      recv_bytes[s] += offset_bytes(n, region_size(call.local(i).numel, call.W, call.me)) +
                       n * int64_t(c10::elementSize(call.wire(i)));
    }
  at::Tensor send_t = at::from_blob(send.data(), {static_cast<int64_t>(send.size())}, at::kByte);
  return comm.alltoall(send_t, send_bytes, recv_bytes);
}

// 3. This rank's region of every tensor: summed in rank order, re-selected to its budget.
std::vector<KeptRegion> reduce_owned(const Call& call, const at::Tensor& got, const std::vector<int64_t>& recv_bytes) {
  std::vector<int64_t> cursor(static_cast<size_t>(call.W), 0);
  for (int s = 1; s < call.W; ++s) cursor[s] = cursor[s - 1] + recv_bytes[s - 1];
  uint8_t* base = got.data_ptr<uint8_t>();
  std::vector<KeptRegion> kept;
  for (int64_t i = 0; i < call.P; ++i) {
    const at::ScalarType dtype = call.local(i).dtype, wire = call.wire(i);
    const int64_t size = region_size(call.local(i).numel, call.W, call.me);
    std::vector<std::vector<uint32_t>> offsets;
    std::vector<at::Tensor> values;
    for (int s = 0; s < call.W; ++s) {
      const int64_t n = call.count_from(s, i), ob = offset_bytes(n, size);
      offsets.push_back(get_offsets(base + cursor[s], n, n, size, s));
      values.push_back(at::from_blob(base + cursor[s] + ob, {n}, wire).to(dtype).contiguous());
      cursor[s] += ob + n * int64_t(c10::elementSize(wire));
    }
    kept.push_back(dtype == at::kFloat ? reduce_region<float>(offsets, values, call.budget[i], call.kept_type(i))
                                       : reduce_region<double>(offsets, values, call.budget[i], call.kept_type(i)));
  }
  return kept;
}

// 4. What this rank allgathers: per tensor a count (int64), then `budget` offsets and `budget`
//    values, padded, so that every rank sends the same size.
std::vector<uint8_t> pack_kept(const Call& call, const std::vector<KeptRegion>& kept) {
  std::vector<uint8_t> out;
  for (int64_t i = 0; i < call.P; ++i) {
    const int64_t n = static_cast<int64_t>(kept[i].offset.size()), b = call.budget[i];
    const size_t vb = c10::elementSize(call.kept_type(i));
    append_bytes(out, &n, 8);
    const std::vector<int64_t> offsets(kept[i].offset.begin(), kept[i].offset.end());
    put_offsets(out, offsets, b, region_size(call.local(i).numel, call.W, call.me));  // sized for b
    const size_t at = out.size();
    out.resize(at + b * vb, 0);
    if (n == 0) continue;  // an empty region's buffers may be null, and memcpy(_, null, 0) is UB
    std::memcpy(out.data() + at, kept[i].wire.data_ptr(), n * vb);
  }
  return out;
}

// 5. Tensor i's mean, region after region from the gathered buffers (`cursor`: where tensor i
//    starts in each), and what this rank is owed back: a dropped entry's whole value, a kept one's
//    rounding to the wire type (v − round(v), exact by Sterbenz; +0 for fp32), and, as the
//    owner, each kept sum's rounding S − round(S).
void decode_tensor(const Call& call, int64_t i, const std::vector<at::Tensor>& regions, std::vector<int64_t>& cursor,
                   const KeptRegion& own) {
  const Compressed& c = call.local(i);
  const at::ScalarType kt = call.kept_type(i);
  const int64_t b = call.budget[i];
  const SortedLocal& s = call.mine[i];
  std::vector<int64_t> index, back_index;
  std::vector<at::Tensor> parts, back_parts;
  std::vector<uint8_t> arrived(s.index.size(), 0);  // a bool per local entry, in sorted order
  for (int r = 0; r < call.W; ++r) {
    uint8_t* p = regions[r].data_ptr<uint8_t>() + cursor[r];
    int64_t n;
    std::memcpy(&n, p, 8);
    const int64_t lo = region_begin(c.numel, call.W, r), size = region_size(c.numel, call.W, r);
    TORCH_CHECK(n >= 0 && n <= b, "sparse allreduce: rank ", r, " kept ", n, " entries of tensor ", i,
                " against a budget of ", b, " (a corrupted or mismatched message)");
    const int64_t ob = offset_bytes(b, size);
    size_t q = index.size();
    for (uint32_t off : get_offsets(p + 8, n, b, size, r)) index.push_back(lo + off);
    parts.push_back(at::from_blob(p + 8 + ob, {n}, kt).to(c.dtype));
    cursor[r] += 8 + ob + b * int64_t(c10::elementSize(kt));
    for (int64_t j = s.from[r]; j < s.from[r + 1]; ++j) {  // both sorted: one merge
      while (q < index.size() && index[q] < s.index[j]) ++q;
      arrived[j] = q < index.size() && index[q] == s.index[j];
    }
  }
  auto owe = [&](const at::Tensor& values, const std::function<int64_t(int64_t)>& index_of) {
    at::Tensor nz = values.ne(0).nonzero().reshape(-1);
    const int64_t* z = nz.data_ptr<int64_t>();
    for (int64_t j = 0; j < nz.numel(); ++j) back_index.push_back(index_of(z[j]));
    back_parts.push_back(values.index_select(0, nz));
  };
  if (!arrived.empty()) {
    at::Tensor kept_here = at::from_blob(arrived.data(), {int64_t(arrived.size())}, at::kBool);
    owe(at::where(kept_here, s.values - s.wire.to(c.dtype), s.values), [&](int64_t j) { return s.index[j]; });
  }
  const int64_t my_lo = region_begin(c.numel, call.W, call.me);
  owe(own.sums - own.wire.to(c.dtype), [&](int64_t j) { return my_lo + int64_t(own.offset[j]); });
  const auto opts = at::TensorOptions().dtype(c.dtype);
  SparseAllreduceSlot& slot = (*call.slots)[i];
  fill(*slot.mean, index, (parts.empty() ? at::empty({0}, opts) : at::cat(parts)).div_(call.W), c.numel);
  fill(*slot.returned, back_index, at::cat(back_parts), c.numel);
}

}  // namespace

double sparse_allreduce_received_bytes(int64_t k, int64_t numel, int64_t value_bytes, int64_t kept_value_bytes,
                                       int world) {
  if (world <= 1) return 0;
  const int64_t budget = (k + world - 1) / world, region = (numel + world - 1) / world;
  const int64_t share = (k + world - 1) / world;  // what one rank sends this owner, spread evenly
  const double scatter = double(world - 1) * double(offset_bytes(share, region) + share * value_bytes);
  const double gather = double(world - 1) * double(8 + offset_bytes(budget, region) + budget * kept_value_bytes);
  return scatter + gather + 16.0 * (world - 1);
}


void SparseAllreduce::run(std::vector<SparseAllreduceSlot>& slots, StepStats& stats) {
  Call call;
  call.W = comm_.world_size();
  call.me = comm_.rank();
  call.P = static_cast<int64_t>(slots.size());
  call.values = values_;
  call.slots = &slots;
  TORCH_CHECK(call.W > 1, "SparseAllreduce needs more than one rank");
  const int64_t payload = sort_selections(call);  // an fp16 overflow stops here, before any collective
  exchange_counts(call, comm_);
  std::vector<int64_t> send_bytes, recv_bytes;
  const at::Tensor got = scatter(call, comm_, send_bytes, recv_bytes);
  const std::vector<KeptRegion> kept = reduce_owned(call, got, recv_bytes);
  std::vector<uint8_t> mine = pack_kept(call, kept);
  std::vector<at::Tensor> regions;
  comm_.allgather_into(at::from_blob(mine.data(), {static_cast<int64_t>(mine.size())}, at::kByte), regions);
  std::vector<int64_t> cursor(static_cast<size_t>(call.W), 0);
  for (int64_t i = 0; i < call.P; ++i) decode_tensor(call, i, regions, cursor, kept[i]);

  // Bytes that left / reached this rank: to and from the others only.
  const int64_t W = call.W, counts = (W - 1) * 2 * call.P * 8, gathered = static_cast<int64_t>(mine.size());
  int64_t scattered_out = 0, scattered_in = 0;
  for (int r = 0; r < call.W; ++r)
    if (r != call.me) scattered_out += send_bytes[r], scattered_in += recv_bytes[r];
  stats.payload_bytes += payload;
  stats.bytes_sent += counts + scattered_out + gathered;
  stats.bytes_received += counts + scattered_in + (W - 1) * gathered;
}

}  // namespace cddp::detail
