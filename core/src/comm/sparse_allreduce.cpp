// sparse_allreduce.cpp — the region-wise reduce-scatter, re-selection and allgather of
// sparse_allreduce.h.
#include "sparse_allreduce.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

namespace cddp::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Region r of an n-entry tensor at W ranks: [region_begin(r), region_begin(r + 1)).
int64_t region_begin(int64_t n, int world, int r) { return (n / world) * r + std::min<int64_t>(r, n % world); }

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
KeptRegion reduce_region(const std::vector<const uint8_t*>& offsets, const std::vector<at::Tensor>& values,
                         int64_t budget, at::ScalarType kept_type) {
  struct Entry {
    uint32_t offset, seq;
    T value;
  };
  std::vector<Entry> all;
  uint32_t seq = 0;
  for (size_t s = 0; s < offsets.size(); ++s) {
    const T* v = values[s].data_ptr<T>();
    for (int64_t j = 0, n = values[s].numel(); j < n; ++j) {
      uint32_t off;
      std::memcpy(&off, offsets[s] + 4 * j, 4);
      all.push_back({off, seq++, v[j]});
    }
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

}  // namespace

double sparse_allreduce_received_bytes(int64_t k, int64_t tensors, int64_t value_bytes, int64_t kept_value_bytes,
                                       int world) {
  if (world <= 1) return 0;
  const double budget = std::ceil(double(k) / world);
  const double scatter = double(world - 1) / world * double(k) * double(4 + value_bytes);
  const double gather = double(world - 1) * (8.0 * tensors + budget * double(4 + kept_value_bytes) * tensors);
  return scatter + gather + 16.0 * tensors * (world - 1);
}

void SparseAllreduce::run(std::vector<SparseAllreduceSlot>& slots, StepStats& stats) {
  const int W = comm_.world_size(), me = comm_.rank();
  const int64_t P = static_cast<int64_t>(slots.size());
  TORCH_CHECK(W > 1, "SparseAllreduce needs more than one rank");
  std::vector<SortedLocal> mine;
  int64_t payload = 0;
  for (int64_t i = 0; i < P; ++i) {
    const Compressed& c = *slots[i].local;
    TORCH_CHECK(c.dtype == at::kFloat || c.dtype == at::kDouble, "sparse allreduce: tensor ", i, " has ", c.dtype,
                " values; it reduces float and double selections only");
    TORCH_CHECK(c.numel / W < (int64_t{1} << 32), "sparse allreduce: tensor ", i, " of ", c.numel,
                " entries has regions too large for 32-bit offsets at ", W, " ranks");
    mine.push_back(sort_local(c, W, step2_type(values_, c.dtype)));
    if (values_ == ValueWire::Half) check_fits_half(mine.back(), static_cast<size_t>(i));
    payload += c.count() * (4 + int64_t(c10::elementSize(step2_type(values_, c.dtype))));
  }

  // 1. Counts: per owner r, [entries for r of tensor i] then [this rank's k of tensor i].
  at::Tensor counts_out = at::empty({W * 2 * P}, at::kLong);
  int64_t* co = counts_out.data_ptr<int64_t>();
  for (int r = 0; r < W; ++r)
    for (int64_t i = 0; i < P; ++i) {
      co[(r * 2 + 0) * P + i] = mine[i].from[r + 1] - mine[i].from[r];
      co[(r * 2 + 1) * P + i] = slots[i].local->count();
    }
  const std::vector<int64_t> equal(static_cast<size_t>(W), 2 * P);
  at::Tensor counts_in = comm_.alltoall(counts_out, equal, equal);
  const int64_t* ci = counts_in.data_ptr<int64_t>();
  std::vector<int64_t> budget(static_cast<size_t>(P), 0);
  for (int s = 0; s < W; ++s)
    for (int64_t i = 0; i < P; ++i) budget[i] = std::max(budget[i], ci[(s * 2 + 1) * P + i]);
  for (auto& b : budget) b = (b + W - 1) / W;

  // 2. Reduce-scatter: to owner r, per tensor, its entries' offsets (uint32) then values.
  std::vector<uint8_t> send;
  std::vector<int64_t> send_bytes(static_cast<size_t>(W)), recv_bytes(static_cast<size_t>(W), 0);
  for (int r = 0; r < W; ++r) {
    const size_t before = send.size();
    for (int64_t i = 0; i < P; ++i) {
      const SortedLocal& s = mine[i];
      const int64_t lo = region_begin(slots[i].local->numel, W, r);
      for (int64_t j = s.from[r]; j < s.from[r + 1]; ++j) {
        const uint32_t off = static_cast<uint32_t>(s.index[j] - lo);
        append_bytes(send, &off, 4);
      }
      const size_t vb = s.wire.element_size();
      append_bytes(send, static_cast<const uint8_t*>(s.wire.data_ptr()) + s.from[r] * vb,
                   (s.from[r + 1] - s.from[r]) * vb);
    }
    send_bytes[r] = static_cast<int64_t>(send.size() - before);
  }
  for (int s = 0; s < W; ++s)
    for (int64_t i = 0; i < P; ++i)
      recv_bytes[s] += ci[(s * 2 + 0) * P + i] * int64_t(4 + mine[i].wire.element_size());
  at::Tensor send_t = at::from_blob(send.data(), {static_cast<int64_t>(send.size())}, at::kByte);
  at::Tensor got = comm_.alltoall(send_t, send_bytes, recv_bytes);

  // 3. Each tensor's region here: summed in rank order, re-selected to its budget.
  std::vector<KeptRegion> kept;
  {
    std::vector<int64_t> cursor(static_cast<size_t>(W));
    for (int s = 0, at_ = 0; s < W; at_ += static_cast<int>(recv_bytes[s]), ++s) cursor[s] = at_;
    const uint8_t* base = got.data_ptr<uint8_t>();
    for (int64_t i = 0; i < P; ++i) {
      const at::ScalarType dtype = slots[i].local->dtype, wire = step2_type(values_, dtype);
      std::vector<const uint8_t*> offs;
      std::vector<at::Tensor> vals;
      for (int s = 0; s < W; ++s) {
        const int64_t n = ci[(s * 2 + 0) * P + i];
        offs.push_back(base + cursor[s]);
        vals.push_back(at::from_blob(const_cast<uint8_t*>(base) + cursor[s] + 4 * n, {n}, wire).to(dtype).contiguous());
        cursor[s] += n * int64_t(4 + c10::elementSize(wire));
      }
      kept.push_back(dtype == at::kFloat ? reduce_region<float>(offs, vals, budget[i], step4_type(values_, dtype))
                                         : reduce_region<double>(offs, vals, budget[i], step4_type(values_, dtype)));
    }
  }

  // 4. Allgather every region's kept entries: per tensor a count (int64), then b offsets and b
  //    values, padded to the budget so that every rank sends the same size.
  std::vector<uint8_t> mine_kept;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t n = static_cast<int64_t>(kept[i].offset.size());
    const size_t vb = c10::elementSize(step4_type(values_, slots[i].local->dtype));
    append_bytes(mine_kept, &n, 8);
    const size_t at_ = mine_kept.size();
    mine_kept.resize(at_ + budget[i] * (4 + vb), 0);
    std::memcpy(mine_kept.data() + at_, kept[i].offset.data(), n * 4);
    std::memcpy(mine_kept.data() + at_ + budget[i] * 4, kept[i].wire.data_ptr(), n * vb);
  }
  at::Tensor kept_t = at::from_blob(mine_kept.data(), {static_cast<int64_t>(mine_kept.size())}, at::kByte);
  std::vector<at::Tensor> regions;
  comm_.allgather_into(kept_t, regions);

  // 5. The mean, region after region; what this rank sent that was not kept, and its own
  //    rounding of the sums it kept, return to it.
  std::vector<int64_t> at_(static_cast<size_t>(W), 0);
  for (int64_t i = 0; i < P; ++i) {
    const Compressed& c = *slots[i].local;
    const at::ScalarType kt = step4_type(values_, c.dtype);
    const size_t vb = c10::elementSize(kt);
    std::vector<int64_t> index, back_index;
    std::vector<at::Tensor> parts, back_parts;
    const SortedLocal& s = mine[i];
    std::vector<uint8_t> arrived(s.index.size(), 0);  // bool per local entry (sorted order)
    for (int r = 0; r < W; ++r) {
      const uint8_t* p = regions[r].data_ptr<uint8_t>() + at_[r];
      int64_t n;
      std::memcpy(&n, p, 8);
      const int64_t lo = region_begin(c.numel, W, r);
      const size_t first = index.size();
      for (int64_t j = 0; j < n; ++j) {
        uint32_t off;
        std::memcpy(&off, p + 8 + 4 * j, 4);
        index.push_back(lo + off);
      }
      parts.push_back(at::from_blob(const_cast<uint8_t*>(p) + 8 + budget[i] * 4, {n}, kt).to(c.dtype));
      at_[r] += 8 + budget[i] * int64_t(4 + vb);
      // Which of this rank's entries in region r are among the kept offsets (both sorted).
      size_t q = first;
      for (int64_t j = s.from[r]; j < s.from[r + 1]; ++j) {
        while (q < index.size() && index[q] < s.index[j]) ++q;
        arrived[j] = q < index.size() && index[q] == s.index[j];
      }
    }
    // Owed back to this rank's residual: a dropped entry's whole value, a kept one's rounding to
    // the wire type (v − round(v), exact by Sterbenz; +0 for fp32), where not zero.
    if (!arrived.empty()) {
      at::Tensor kept_here = at::from_blob(arrived.data(), {int64_t(arrived.size())}, at::kBool);
      at::Tensor owed = at::where(kept_here, s.values - s.wire.to(c.dtype), s.values);
      at::Tensor nz = owed.ne(0).nonzero().reshape(-1);
      const int64_t* z = nz.data_ptr<int64_t>();
      for (int64_t j = 0; j < nz.numel(); ++j) back_index.push_back(s.index[z[j]]);
      back_parts.push_back(owed.index_select(0, nz));
    }
    // The owner's rounding: S − round(S), exact (Sterbenz), where it is not zero.
    const KeptRegion& own = kept[i];
    at::Tensor diff = own.sums - own.wire.to(c.dtype);
    at::Tensor nz = diff.ne(0).nonzero().reshape(-1);
    if (nz.numel() > 0) {
      const int64_t lo = region_begin(c.numel, W, me);
      const int64_t* z = nz.data_ptr<int64_t>();
      for (int64_t j = 0; j < nz.numel(); ++j) back_index.push_back(lo + own.offset[z[j]]);
      back_parts.push_back(diff.index_select(0, nz));
    }
    const auto opts = at::TensorOptions().dtype(c.dtype);
    fill(*slots[i].mean, index, (parts.empty() ? at::empty({0}, opts) : at::cat(parts)).div_(W), c.numel);
    fill(*slots[i].returned, back_index, back_parts.empty() ? at::empty({0}, opts) : at::cat(back_parts), c.numel);
  }

  int64_t sent = static_cast<int64_t>(send.size()) - send_bytes[me] + static_cast<int64_t>(mine_kept.size());
  int64_t received = got.numel() - recv_bytes[me] + (W - 1) * static_cast<int64_t>(mine_kept.size());
  sent += (W - 1) * 2 * P * 8;
  received += (W - 1) * 2 * P * 8;
  stats.payload_bytes += payload;
  stats.bytes_sent += sent;
  stats.bytes_received += received;
}

}  // namespace cddp::detail
