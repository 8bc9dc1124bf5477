// gradient_exchange.cpp — packing, collectives and rank-ordered decoding of gradients.
#include <cddp/gradient_exchange.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <thread>

namespace cddp {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int64_t pad8(int64_t bytes) { return (bytes + 7) & ~int64_t{7}; }

int64_t ring_allreduce_bytes(int64_t bytes, int world) {
  return world > 1 ? (2 * (world - 1) * bytes) / world : 0;
}

// Byte layout of one rank's packed selections, given that rank's counts.
struct Layout {
  std::vector<int64_t> value_offset, index_offset;
  int64_t total = 0;
};

Layout layout_for(const std::vector<SparseSlot>& slots, const int64_t* counts) {
  Layout l;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Compressed& c = *slots[i].local;
    int64_t vsize = c10::elementSize(c.dtype), isize = c10::elementSize(index_dtype_for(c.numel));
    l.value_offset.push_back(l.total);
    l.total += pad8(counts[i] * vsize);
    l.index_offset.push_back(l.total);
    l.total += pad8(counts[i] * isize);
  }
  return l;
}

at::Tensor as_bytes(const at::Tensor& t) { return t.contiguous().view(at::kByte); }

// Zeroes the outputs on a helper thread while the caller waits in the allgathers (a 25M-float
// output costs as much to clear as the sparse allgather takes). Joined before anything reads
// the outputs, and on every exit path. Small or non-CPU outputs are cleared inline.
class ZeroOutputs {
 public:
  explicit ZeroOutputs(std::vector<SparseSlot>& slots) {
    int64_t numel = 0;
    bool cpu = true;
    for (auto& s : slots) {
      numel += s.average->numel();
      cpu = cpu && s.average->is_cpu();
    }
    if (!cpu || numel < (int64_t{1} << 20)) {
      for (auto& s : slots) s.average->zero_();
      return;
    }
    thread_ = std::thread([this, &slots] {
      try {  // memset: all-zero bytes are +0 in every dtype, and glibc streams large clears
        for (auto& s : slots)
          if (s.average->is_contiguous())
            std::memset(s.average->data_ptr(), 0, s.average->numel() * s.average->element_size());
          else
            s.average->zero_();
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
  std::thread thread_;
  std::exception_ptr error_;
};

// The sparse average on the CPU for float/double, without ATen's per-index overhead (index_add_
// and index_put_ cost tens of ns per entry; these are plain loops). Sorted lists are merged
// (merge_mean); otherwise each rank's selection is added in rank order — out[idx] += value,
// exactly what Compressor::decompress_add_ means — and every touched entry is divided once (a
// bitmap skips indices several ranks sent). mean_raw returns false when the layout is not one
// it handles; the caller then uses the codec and ATen.
// When every rank's indices are strictly increasing (top-k and random-k emit them sorted) and
// there are few ranks: one merge over the ranks' lists, writing each touched entry once as
// ((0 + v_rank0) + v_rank1 ...) / W — the same additions in the same order as the scatter
// below, read and written in address order. False (nothing written) when a list is unsorted.
template <typename T, typename I>
bool merge_mean(T* out, int64_t numel, const std::vector<Compressed>& parts, const std::vector<int>& from,
                int world) {
  const size_t P = parts.size();
  if (P > 16) return false;
  std::vector<const I*> idx(P);
  std::vector<const T*> val(P);
  std::vector<int64_t> pos(P, 0), n(P);
  for (size_t p = 0; p < P; ++p) {
    idx[p] = parts[p].indices.template data_ptr<I>();
    val[p] = parts[p].values.template data_ptr<T>();
    n[p] = parts[p].count();
    for (int64_t j = 0; j < n[p]; ++j) {
      const int64_t x = static_cast<int64_t>(idx[p][j]);
      TORCH_CHECK(x >= 0 && x < numel, "GradientExchange: rank ", from[p], " sent index ", x, " for a tensor of ",
                  numel, " elements");
      if (j > 0 && x <= static_cast<int64_t>(idx[p][j - 1])) return false;
    }
  }
  const T w = static_cast<T>(world);
  constexpr int64_t kAhead = 64;  // prefetch distance: the writes land on scattered cache lines
  while (true) {
    int64_t x = numel;  // the smallest index not yet written
    for (size_t p = 0; p < P; ++p)
      if (pos[p] < n[p]) x = std::min<int64_t>(x, static_cast<int64_t>(idx[p][pos[p]]));
    if (x == numel) break;
    T acc = T(0);  // out[x] is +0 (cleared before the decode): start from the same +0
    for (size_t p = 0; p < P; ++p)
      if (pos[p] < n[p] && static_cast<int64_t>(idx[p][pos[p]]) == x) {
        if (pos[p] + kAhead < n[p]) __builtin_prefetch(out + idx[p][pos[p] + kAhead], 1, 0);
        acc += val[p][pos[p]++];
      }
    out[x] = acc / w;
  }
  return true;
}

template <typename T, typename I>
void mean_raw_impl(at::Tensor& avg, const std::vector<Compressed>& parts, const std::vector<int>& from, int world) {
  T* out = avg.data_ptr<T>();
  const int64_t numel = avg.numel();
  if (merge_mean<T, I>(out, numel, parts, from, world)) return;
  int64_t touched = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    const T* v = parts[p].values.template data_ptr<T>();
    const I* idx = parts[p].indices.template data_ptr<I>();
    const int64_t n = parts[p].count();
    for (int64_t j = 0; j < n; ++j) {
      const int64_t x = static_cast<int64_t>(idx[j]);
      TORCH_CHECK(x >= 0 && x < numel, "GradientExchange: rank ", from[p], " sent index ", x, " for a tensor of ",
                  numel, " elements");
      out[x] += v[j];
    }
    touched += n;
  }
  if (touched * 8 >= numel) {
    avg.div_(world);
    return;
  }
  const T w = static_cast<T>(world);
  std::vector<uint64_t> done(static_cast<size_t>((numel + 63) / 64), 0);
  for (const auto& c : parts) {
    const I* idx = c.indices.template data_ptr<I>();
    for (int64_t j = 0, n = c.count(); j < n; ++j) {
      const uint64_t x = static_cast<uint64_t>(idx[j]);
      uint64_t& word = done[x >> 6];
      const uint64_t bit = uint64_t{1} << (x & 63);
      if (word & bit) continue;
      word |= bit;
      out[x] = out[x] / w;
    }
  }
}

bool mean_raw(at::Tensor& avg, const std::vector<Compressed>& parts, const std::vector<int>& from, int world) {
  const at::ScalarType t = avg.scalar_type();
  if (!avg.is_cpu() || !avg.is_contiguous() || (t != at::kFloat && t != at::kDouble)) return false;
  for (const auto& c : parts)
    if (c.values.scalar_type() != t || c.numel != avg.numel() || !c.values.is_contiguous() ||
        !c.indices.is_contiguous())
      return false;
  const at::ScalarType it = parts.front().indices.scalar_type();
  if (t == at::kFloat) {
    if (it == at::kInt) mean_raw_impl<float, int32_t>(avg, parts, from, world);
    else mean_raw_impl<float, int64_t>(avg, parts, from, world);
  } else {
    if (it == at::kInt) mean_raw_impl<double, int32_t>(avg, parts, from, world);
    else mean_raw_impl<double, int64_t>(avg, parts, from, world);
  }
  return true;
}

}  // namespace

bool GradientExchange::any_rank(bool local_flag) {
  if (comm_.world_size() == 1) return local_flag;
  at::Tensor flag = at::full({1}, local_flag ? 1.0f : 0.0f, at::kFloat);
  comm_.allreduce_sum_(flag);
  return flag.item<float>() > 0.0f;
}

void GradientExchange::average_sparse(std::vector<SparseSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  const int me = comm_.rank();
  auto t0 = Clock::now();
  int64_t payload = 0;
  for (auto& s : slots) payload += s.local->wire_bytes();

  if (world == 1) {
    for (auto& s : slots) s.average->zero_();
    for (auto& s : slots) s.codec->decompress_add_(*s.local, *s.average);
    stats.payload_bytes += payload;
    stats.bytes_sent += payload;
    stats.comm_ms += ms_since(t0);
    return;
  }

  // 1. Counts: selections may differ in size between ranks (threshold compressors), and
  //    an empty selection must still take part, or the collective would hang.
  const int64_t P = static_cast<int64_t>(slots.size());
  ZeroOutputs zeroing(slots);  // overlaps the two allgathers
  at::Tensor counts = at::empty({P}, at::kLong);
  for (int64_t i = 0; i < P; ++i) counts[i] = slots[i].local->count();
  std::vector<at::Tensor> all_counts = comm_.allgather(counts);
  std::vector<Layout> layouts;
  int64_t max_total = 0;
  for (int r = 0; r < world; ++r) {
    at::Tensor c = all_counts[r].contiguous();
    layouts.push_back(layout_for(slots, c.data_ptr<int64_t>()));
    max_total = std::max(max_total, layouts.back().total);
  }

  // 2. Pack this rank's values and indices into one padded byte buffer; gather it.
  at::Tensor packed = at::zeros({std::max<int64_t>(max_total, 8)}, at::kByte);
  const Layout& mine = layouts[me];
  for (int64_t i = 0; i < P; ++i) {
    const Compressed& c = *slots[i].local;
    if (c.count() == 0) continue;
    at::Tensor vb = as_bytes(c.values.to(c.dtype)), ib = as_bytes(c.indices.to(index_dtype_for(c.numel)));
    packed.narrow(0, mine.value_offset[i], vb.numel()).copy_(vb);
    packed.narrow(0, mine.index_offset[i], ib.numel()).copy_(ib);
  }
  std::vector<at::Tensor> gathered = comm_.allgather(packed);

  // 3. Decode in rank order, so every rank adds the same numbers in the same order, then
  //    divide by W. Entries no rank selected are +0 and stay +0, so when few entries were
  //    touched only those are divided: the same bits as a full div_, without another pass
  //    over the whole tensor.
  zeroing.wait();
  for (int64_t i = 0; i < P; ++i) {
    const Compressed& local = *slots[i].local;
    at::Tensor& avg = *slots[i].average;
    const at::ScalarType it = index_dtype_for(local.numel);
    std::vector<Compressed> parts;  // each rank's selection, rank order
    std::vector<int> from;
    for (int r = 0; r < world; ++r) {
      const int64_t n = all_counts[r].data_ptr<int64_t>()[i];
      if (n == 0) continue;
      Compressed c;
      c.numel = local.numel;
      c.shape = local.shape;
      c.dtype = local.dtype;
      c.values = gathered[r].narrow(0, layouts[r].value_offset[i], n * c10::elementSize(c.dtype)).view(c.dtype);
      c.indices = gathered[r].narrow(0, layouts[r].index_offset[i], n * c10::elementSize(it)).view(it);
      parts.push_back(std::move(c));
      from.push_back(r);
    }
    if (parts.empty()) continue;
    if (mean_raw(avg, parts, from, world)) continue;
    // Other dtypes and devices: the codec's own decode, and ATen for the division.
    int64_t touched = 0;
    for (const auto& c : parts) {
      slots[i].codec->decompress_add_(c, avg);
      touched += c.count();
    }
    if (touched * 8 >= avg.numel()) {
      avg.div_(world);
    } else {  // index_select reads every entry before index_put_ writes: duplicates are harmless
      std::vector<at::Tensor> longs;
      for (const auto& c : parts) longs.push_back(c.indices.to(at::kLong));
      at::Tensor idx = at::cat(longs);
      at::Tensor flat = avg.view(-1);
      flat.index_put_({idx}, flat.index_select(0, idx).div_(world));
    }
  }

  const int64_t sent = packed.numel() + counts.numel() * 8;
  stats.payload_bytes += payload + counts.numel() * 8;
  stats.bytes_sent += sent;
  stats.bytes_received += (world - 1) * sent;
  stats.comm_ms += ms_since(t0);
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

}  // namespace cddp
