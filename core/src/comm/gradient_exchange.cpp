// gradient_exchange.cpp — packing, collectives and rank-ordered decoding of gradients.
#include <cddp/gradient_exchange.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <thread>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

constexpr int kBlockBits = 16;  // IndexCoding::Block16: 65,536 entries a block
int64_t blocks_of(int64_t numel) { return (numel + (int64_t{1} << kBlockBits) - 1) >> kBlockBits; }
int64_t plain_index_bytes(int64_t count, int64_t numel) {
  return count * static_cast<int64_t>(c10::elementSize(index_dtype_for(numel)));
}
int64_t block16_bytes(int64_t count, int64_t numel) { return 4 * blocks_of(numel) + 2 * count; }
// Whether a selection of `count` entries travels Block16-coded: every rank can tell from the counts.
bool block16(IndexCoding coding, int64_t count, int64_t numel) {
  return coding == IndexCoding::Block16 && count > 0 && block16_bytes(count, numel) < plain_index_bytes(count, numel);
}

// Byte layout of one rank's packed selections, given that rank's counts.
struct Layout {
  std::vector<int64_t> value_offset, index_offset;
  int64_t total = 0;
};

Layout layout_for(const std::vector<SparseSlot>& slots, const int64_t* counts, IndexCoding coding) {
  Layout l;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Compressed& c = *slots[i].local;
    const int64_t vsize = c10::elementSize(c.dtype);
    l.value_offset.push_back(l.total);
    l.total += pad8(counts[i] * vsize);
    l.index_offset.push_back(l.total);  // a multiple of 8: Block16's uint32 counts are aligned
    l.total += pad8(index_wire_bytes(counts[i], c.numel, coding));
  }
  return l;
}

// Block16 encoding of one selection into `dst` (4·blocks + 2·n bytes): the per-block counts,
// then the low 16 bits of each index, block after block. If the list is not already grouped by
// block (an unsorted compressor), it is regrouped by a stable counting sort and `order` receives
// the permutation (order[pos] = list position sent at pos), which the values must follow; for
// a grouped list (top-k and random-k emit sorted lists) `order` is left empty.
template <typename I>
void encode_block16(const I* idx, int64_t n, int64_t numel, uint8_t* dst, std::vector<int64_t>& order) {
  const int64_t nb = blocks_of(numel);
  auto* counts = reinterpret_cast<uint32_t*>(dst);
  auto* low = reinterpret_cast<uint16_t*>(dst + 4 * nb);
  std::fill(counts, counts + nb, 0u);
  bool grouped = true;
  int64_t prev = 0;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t x = static_cast<int64_t>(idx[j]);
    TORCH_CHECK(x >= 0 && x < numel, "sparse exchange: this rank's selection holds index ", x, " for a tensor of ",
                numel, " elements");
    const int64_t b = x >> kBlockBits;
    ++counts[b];
    grouped = grouped && b >= prev;
    prev = b;
  }
  order.clear();
  if (grouped) {
    for (int64_t j = 0; j < n; ++j) low[j] = static_cast<uint16_t>(static_cast<int64_t>(idx[j]) & 0xFFFF);
    return;
  }
  std::vector<int64_t> next(static_cast<size_t>(nb), 0);
  for (int64_t b = 1; b < nb; ++b) next[b] = next[b - 1] + counts[b - 1];
  order.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    const int64_t x = static_cast<int64_t>(idx[j]);
    const int64_t pos = next[x >> kBlockBits]++;
    low[pos] = static_cast<uint16_t>(x & 0xFFFF);
    order[pos] = j;
  }
}

// The inverse: rank `from`'s n indices, Block16-coded at `src`, into `out` (int32 or int64).
template <typename I>
void decode_block16(const uint8_t* src, int64_t n, int64_t numel, I* out, int from) {
  const int64_t nb = blocks_of(numel);
  const auto* counts = reinterpret_cast<const uint32_t*>(src);
  const auto* low = reinterpret_cast<const uint16_t*>(src + 4 * nb);
  int64_t total = 0;
  for (int64_t b = 0; b < nb; ++b) total += counts[b];
  TORCH_CHECK(total == n, "sparse exchange: rank ", from, "'s index blocks count ", total, " entries, its count says ",
              n, " (a corrupted or mismatched message)");
  int64_t j = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t base = b << kBlockBits;
    for (int64_t e = j + counts[b]; j < e; ++j) out[j] = static_cast<I>(base | low[j]);
  }
  for (int64_t q = n - counts[nb - 1]; q < n; ++q)  // only the last block can reach past numel
    TORCH_CHECK(static_cast<int64_t>(out[q]) < numel, "sparse exchange: rank ", from, " sent index ", out[q],
                " for a tensor of ", numel, " elements");
}

at::Tensor as_bytes(const at::Tensor& t) { return t.contiguous().view(at::kByte); }

// Sets every entry of a CPU-contiguous tensor listed in `idx` to all-zero bytes (+0 in every dtype).
void zero_entries(at::Tensor& t, const std::vector<int64_t>& idx) {
  auto fill = [&](auto* base) {
    using U = std::remove_pointer_t<decltype(base)>;
    for (int64_t x : idx) base[x] = U(0);
  };
  void* p = t.data_ptr();
  switch (t.element_size()) {
    case 1: fill(static_cast<uint8_t*>(p)); break;
    case 2: fill(static_cast<uint16_t*>(p)); break;
    case 4: fill(static_cast<uint32_t*>(p)); break;
    case 8: fill(static_cast<uint64_t*>(p)); break;
    default:
      for (int64_t x : idx) std::memset(static_cast<char*>(p) + x * t.element_size(), 0, t.element_size());
  }
}

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
void clear_stale(at::Tensor& t, const Stale& stale) {
  if (stale.everything) {
    if (t.is_cpu() && t.is_contiguous()) std::memset(t.data_ptr(), 0, t.numel() * t.element_size());  // streams
    else t.zero_();
  } else if (stale.list) {
    zero_entries(t, *stale.list);
  }
}

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

// The sparse average on the CPU for float/double, without ATen's per-index overhead (index_add_
// and index_put_ cost tens of ns per entry; these are plain loops). Every rank's selection is
// added in rank order — out[x] = ((+0 + v_rank0) + v_rank1 ...) / W, exactly what
// Compressor::decompress_add_ into a cleared output followed by a division means — so every
// rank computes the same bits whichever of the three loops below runs:
//   sweep   (all lists sorted, dense enough): writes the whole output, block by block;
//   merge   (all lists sorted, sparse): writes each touched entry once, in address order;
//   scatter (a list unsorted): adds each rank's list in turn, then divides touched entries.
// `stale`: what of the output the previous call left non-zero; it ends +0 unless written now.
// `touched` (optional) receives every index written (no repeats), except after a sweep, which
// writes every entry and says so (Written::Everything).

// Throws on an index outside [0, numel); false when some list is not strictly increasing.
template <typename I>
bool all_sorted(const std::vector<Compressed>& parts, const std::vector<int>& from, int64_t numel) {
  bool sorted = true;
  for (size_t p = 0; p < parts.size(); ++p) {
    const I* idx = parts[p].indices.template data_ptr<I>();
    for (int64_t j = 0, n = parts[p].count(); j < n; ++j) {
      const int64_t x = static_cast<int64_t>(idx[j]);
      TORCH_CHECK(x >= 0 && x < numel, "GradientExchange: rank ", from[p], " sent index ", x, " for a tensor of ",
                  numel, " elements");
      sorted = sorted && (j == 0 || x > static_cast<int64_t>(idx[j - 1]));
    }
  }
  return sorted;
}

// Copies `bytes` from an aligned block buffer to `dst`, with non-temporal stores when `dst` is
// 16-byte aligned: the output is written once and not read back soon, so it need not be read
// into the cache first (for a 100 MB output that read is half the memory traffic).
void store_block(void* dst, const void* src, size_t bytes, bool stream) {
#if defined(__SSE2__)
  if (stream) {
    auto* d = static_cast<char*>(dst);
    auto* s = static_cast<const char*>(src);
    size_t j = 0;
    for (; j + 16 <= bytes; j += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + j), _mm_load_si128(reinterpret_cast<const __m128i*>(s + j)));
    if (j < bytes) std::memcpy(d + j, s + j, bytes - j);
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, bytes);
}

// Sweep: a selection covering ~1/kSweepFactor of the output or more touches most of its cache
// lines anyway (16 floats a line), and scattered writes cost ~6–10 ns each where a streaming
// write costs ~0.2 ns an entry (measured on this project's 2-core dev VM, 25M floats, 1 % from
// each of 2 ranks: 4.3 ms against 6–11 ms for the merge with its re-zeroing). Each block of
// kSweepBlock entries is built in a stack buffer — cleared, every rank's entries in it added in
// rank order, each touched entry divided once — then streamed out. Stale entries need no work:
// every entry is written. It lists nothing: a list would cost as much again, and the next
// call's decode, a sweep again as long as the density holds, does not need one.
// Each rank's list as raw pointers: idx[p][j], val[p][j] for j < n[p].
template <typename T, typename I>
struct RankLists {
  std::vector<const I*> idx;
  std::vector<const T*> val;
  std::vector<int64_t> n;
  int64_t total = 0;
  explicit RankLists(const std::vector<Compressed>& parts) {
    for (const auto& c : parts) {
      idx.push_back(c.indices.template data_ptr<I>());
      val.push_back(c.values.template data_ptr<T>());
      n.push_back(c.count());
      total += c.count();
    }
  }
};

constexpr int64_t kSweepFactor = 48;
constexpr int64_t kSweepBlock = 4096;  // 16–32 KB of buffer: stays in L1/L2

template <typename T, typename I>
void sweep_mean(T* out, int64_t numel, const std::vector<Compressed>& parts, int world) {
  const size_t P = parts.size();
  const RankLists<T, I> l(parts);
  const auto &idx = l.idx, &val = l.val;
  const auto& n = l.n;
  std::vector<int64_t> pos(P, 0), start(P);
  alignas(64) T buf[kSweepBlock];
  std::vector<uint32_t> seen(kSweepBlock, 0);  // seen[x] == block number + 1: x divided already
  const bool stream = reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const T w = static_cast<T>(world);
  uint32_t block = 0;
  for (int64_t b0 = 0; b0 < numel; b0 += kSweepBlock) {
    const int64_t len = std::min(kSweepBlock, numel - b0), b1 = b0 + len;
    ++block;
    std::memset(buf, 0, static_cast<size_t>(len) * sizeof(T));
    for (size_t p = 0; p < P; ++p) {  // rank order: the same additions as the merge and scatter
      int64_t q = start[p] = pos[p];
      for (; q < n[p] && static_cast<int64_t>(idx[p][q]) < b1; ++q) buf[idx[p][q] - b0] += val[p][q];
      pos[p] = q;
    }
    for (size_t p = 0; p < P; ++p)
      for (int64_t q = start[p]; q < pos[p]; ++q) {
        const int64_t x = static_cast<int64_t>(idx[p][q]) - b0;
        if (seen[x] == block) continue;
        seen[x] = block;
        buf[x] = buf[x] / w;
      }
    store_block(out + b0, buf, static_cast<size_t>(len) * sizeof(T), stream);
  }
#if defined(__SSE2__)
  if (stream) _mm_sfence();  // the streamed stores are visible before anyone reads the output
#endif
}

// Merge: one pass over the ranks' sorted lists, writing each touched entry once as
// ((+0 + v_rank0) + v_rank1 ...) / W, in address order. `prev` (strictly increasing) entries
// not written now are set to +0 in the same sweep.
template <typename T, typename I>
void merge_mean(T* out, int64_t numel, const std::vector<Compressed>& parts, int world,
                std::vector<int64_t>* touched, const std::vector<int64_t>* prev) {
  const size_t P = parts.size();
  const RankLists<T, I> l(parts);
  const auto &idx = l.idx, &val = l.val;
  const auto& n = l.n;
  std::vector<int64_t> pos(P, 0);
  if (touched) touched->reserve(touched->size() + l.total);
  const T w = static_cast<T>(world);
  constexpr int64_t kAhead = 64;  // prefetch distance: the writes land on scattered cache lines
  const int64_t* old = prev ? prev->data() : nullptr;
  const int64_t old_n = prev ? static_cast<int64_t>(prev->size()) : 0;
  int64_t op = 0;
  while (true) {
    int64_t x = numel;  // the smallest index not yet written
    for (size_t p = 0; p < P; ++p)
      if (pos[p] < n[p]) x = std::min<int64_t>(x, static_cast<int64_t>(idx[p][pos[p]]));
    for (; op < old_n && old[op] < x; ++op) {  // written last call, not now: back to +0
      if (op + kAhead < old_n) __builtin_prefetch(out + old[op + kAhead], 1, 0);
      out[old[op]] = T(0);
    }
    if (x == numel) break;
    if (op < old_n && old[op] == x) ++op;  // overwritten below
    T acc = T(0);  // the full-clear path adds into +0: start from the same +0 (out[x] is never read)
    for (size_t p = 0; p < P; ++p)
      if (pos[p] < n[p] && static_cast<int64_t>(idx[p][pos[p]]) == x) {
        if (pos[p] + kAhead < n[p]) __builtin_prefetch(out + idx[p][pos[p] + kAhead], 1, 0);
        acc += val[p][pos[p]++];
      }
    out[x] = acc / w;
    if (touched) touched->push_back(x);
  }
}

template <typename T, typename I>
Written mean_raw_impl(at::Tensor& avg, const std::vector<Compressed>& parts, const std::vector<int>& from, int world,
                      std::vector<int64_t>* touched_out, Stale stale) {
  T* out = avg.data_ptr<T>();
  const int64_t numel = avg.numel();
  if (all_sorted<I>(parts, from, numel)) {
    int64_t entries = stale.everything ? numel : stale.list ? static_cast<int64_t>(stale.list->size()) : 0;
    for (const auto& c : parts) entries += c.count();
    if (entries * kSweepFactor >= numel) {
      sweep_mean<T, I>(out, numel, parts, world);
      return Written::Everything;
    }
    if (stale.any() && !(stale.list && stale.sorted)) {
      clear_stale(avg, stale);
      stale = Stale();
    }
    if (parts.size() <= 16) {  // more lists than that: the per-entry minimum costs more than scattering
      merge_mean<T, I>(out, numel, parts, world, touched_out, stale.list);
      return Written::ListedSorted;
    }
  }
  clear_stale(avg, stale);  // the scatter below adds into +0
  const RankLists<T, I> l(parts);
  for (size_t p = 0; p < parts.size(); ++p)
    for (int64_t j = 0; j < l.n[p]; ++j) out[l.idx[p][j]] += l.val[p][j];  // range-checked by all_sorted
  const T w = static_cast<T>(world);
  if (l.total * 8 >= numel && !touched_out) {
    avg.div_(world);
    return Written::Listed;
  }
  std::vector<uint64_t> done(static_cast<size_t>((numel + 63) / 64), 0);
  for (size_t p = 0; p < parts.size(); ++p) {
    for (int64_t j = 0; j < l.n[p]; ++j) {
      const uint64_t x = static_cast<uint64_t>(l.idx[p][j]);
      uint64_t& word = done[x >> 6];
      const uint64_t bit = uint64_t{1} << (x & 63);
      if (word & bit) continue;
      word |= bit;
      out[x] = out[x] / w;
      if (touched_out) touched_out->push_back(static_cast<int64_t>(x));
    }
  }
  return Written::Listed;
}

// True when it wrote the average (and cleared `stale`), with how into *written; false: it wrote
// nothing, and the caller decodes through the codec.
bool mean_raw(at::Tensor& avg, const std::vector<Compressed>& parts, const std::vector<int>& from, int world,
              std::vector<int64_t>* touched, const Stale& stale, Written* written) {
  const at::ScalarType t = avg.scalar_type();
  if (!avg.is_cpu() || !avg.is_contiguous() || (t != at::kFloat && t != at::kDouble)) return false;
  for (const auto& c : parts)
    if (c.values.scalar_type() != t || c.numel != avg.numel() || !c.values.is_contiguous() ||
        !c.indices.is_contiguous())
      return false;
  const at::ScalarType it = parts.front().indices.scalar_type();
  if (t == at::kFloat) {
    if (it == at::kInt) *written = mean_raw_impl<float, int32_t>(avg, parts, from, world, touched, stale);
    else *written = mean_raw_impl<float, int64_t>(avg, parts, from, world, touched, stale);
  } else {
    if (it == at::kInt) *written = mean_raw_impl<double, int32_t>(avg, parts, from, world, touched, stale);
    else *written = mean_raw_impl<double, int64_t>(avg, parts, from, world, touched, stale);
  }
  return true;
}

// `v` where `keep`, else +0 — without a branch (which list holds the next index is a coin flip,
// and a mispredicted branch per entry costs more than the rest of the merge).
template <typename T>
inline T keep_if(T v, bool keep) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits b;
  std::memcpy(&b, &v, sizeof b);
  b &= Bits(0) - Bits(keep);
  std::memcpy(&v, &b, sizeof b);
  return v;
}

// Two ranks' strictly increasing lists merged into (oi, ov), the mean ((+0 + va) + vb) / w at
// each index; returns the entries written. Adding +0 for the rank that did not send an index
// changes no bits: +0 + v is never −0, and y + (+0) == y for every other y. Branch-free, and
// split at A's middle index into two independent halves stepped in one loop, so that two
// merges' load→compare→advance chains overlap (0.94 ms against 1.56 ms for one chain, 500k
// entries, on the dev VM; with branches 2.95 ms).
template <typename T, typename I>
int64_t merge_two(const I* a, const T* va, int64_t na, const I* b, const T* vb, int64_t nb, I* oi, T* ov, T w) {
  auto step = [&](int64_t& i, int64_t& j, int64_t& m) {
    const I x = a[i], y = b[j];
    const bool ta = x <= y, tb = y <= x;
    oi[m] = std::min(x, y);
    ov[m++] = ((T(0) + keep_if(va[i], ta)) + keep_if(vb[j], tb)) / w;
    i += ta;
    j += tb;
  };
  auto finish = [&](int64_t& i, int64_t ie, int64_t& j, int64_t je, int64_t& m) {
    while (i < ie && j < je) step(i, j, m);
    for (; i < ie; ++i, ++m) oi[m] = a[i], ov[m] = (T(0) + va[i]) / w;
    for (; j < je; ++j, ++m) oi[m] = b[j], ov[m] = (T(0) + vb[j]) / w;
  };
  // Half 0: a[0, ia), b[0, jb); half 1: the rest — every index of half 1 is >= a[ia] > half 0's.
  const int64_t ia = na / 2;
  const int64_t jb = ia < na ? std::lower_bound(b, b + nb, a[ia]) - b : nb;
  int64_t i0 = 0, j0 = 0, m0 = 0, i1 = ia, j1 = jb, m1 = ia + jb;
  while (i0 < ia && j0 < jb && i1 < na && j1 < nb) {
    step(i0, j0, m0);
    step(i1, j1, m1);
  }
  finish(i0, ia, j0, jb, m0);
  finish(i1, na, j1, nb, m1);
  const int64_t second = m1 - (ia + jb);  // half 1 was written from ia + jb on: close the gap
  std::memmove(oi + m0, oi + ia + jb, static_cast<size_t>(second) * sizeof(I));
  std::memmove(ov + m0, ov + ia + jb, static_cast<size_t>(second) * sizeof(T));
  return m0 + second;
}

// Coalesce: the ranks' lists as one strictly increasing list holding, at each index any rank
// sent, ((+0 + v_rank0) + v_rank1 ...) / W in rank order — the bits the dense decodes above
// write there. It reads and writes O(k·W) memory, never the numel-sized output.
template <typename T, typename I>
void coalesce_mean(SparseAverage& out, const std::vector<Compressed>& parts, const std::vector<int>& from, int world,
                   int64_t numel) {
  const bool sorted = all_sorted<I>(parts, from, numel);  // range-checks every index
  const RankLists<T, I> l(parts);
  const size_t P = parts.size();
  const auto index_type = std::is_same_v<I, int32_t> ? at::kInt : at::kLong;
  const auto value_type = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  if (!out.indices.defined() || out.indices.scalar_type() != index_type) out.indices = at::empty({0}, index_type);
  if (!out.values.defined() || out.values.scalar_type() != value_type) out.values = at::empty({0}, value_type);
  out.indices.resize_({l.total});  // keeps its storage when it is large enough (the usual case)
  out.values.resize_({l.total});
  I* oi = out.indices.data_ptr<I>();
  T* ov = out.values.data_ptr<T>();
  const T w = static_cast<T>(world);
  int64_t m = 0;
  if (sorted && P == 2) {
    m = merge_two(l.idx[0], l.val[0], l.n[0], l.idx[1], l.val[1], l.n[1], oi, ov, w);
  } else if (sorted && P <= 16) {
    std::vector<int64_t> pos(P, 0);
    while (true) {
      int64_t x = numel;  // the smallest index not yet written
      for (size_t p = 0; p < P; ++p)
        if (pos[p] < l.n[p]) x = std::min<int64_t>(x, static_cast<int64_t>(l.idx[p][pos[p]]));
      if (x == numel) break;
      T acc = T(0);
      for (size_t p = 0; p < P; ++p)
        if (pos[p] < l.n[p] && static_cast<int64_t>(l.idx[p][pos[p]]) == x) acc += l.val[p][pos[p]++];
      oi[m] = static_cast<I>(x);
      ov[m++] = acc / w;
    }
  } else {  // unsorted lists (or repeats): a stable sort keeps rank order, then list order, per index
    std::vector<std::pair<I, T>> all;
    all.reserve(static_cast<size_t>(l.total));
    for (size_t p = 0; p < P; ++p)
      for (int64_t j = 0; j < l.n[p]; ++j) all.emplace_back(l.idx[p][j], l.val[p][j]);
    std::stable_sort(all.begin(), all.end(), [](const auto& u, const auto& v) { return u.first < v.first; });
    for (size_t j = 0; j < all.size();) {
      const I x = all[j].first;
      T acc = T(0);
      for (; j < all.size() && all[j].first == x; ++j) acc += all[j].second;
      oi[m] = x;
      ov[m++] = acc / w;
    }
  }
  out.indices.resize_({m});
  out.values.resize_({m});
  out.numel = numel;
  out.valid = true;
}

// True when the slot's mean goes to its coalesced list (CPU float/double selections).
bool coalesces(const SparseSlot& s) {
  if (!s.coalesced) return false;
  const Compressed& c = *s.local;
  return (c.dtype == at::kFloat || c.dtype == at::kDouble) && (!c.values.defined() || c.values.is_cpu());
}

void coalesce(SparseAverage& out, const std::vector<Compressed>& parts, const std::vector<int>& from, int world,
              const Compressed& local) {
  const bool wide = index_dtype_for(local.numel) == at::kLong;
  if (local.dtype == at::kFloat) {
    if (wide) coalesce_mean<float, int64_t>(out, parts, from, world, local.numel);
    else coalesce_mean<float, int32_t>(out, parts, from, world, local.numel);
  } else {
    if (wide) coalesce_mean<double, int64_t>(out, parts, from, world, local.numel);
    else coalesce_mean<double, int32_t>(out, parts, from, world, local.numel);
  }
}

}  // namespace

namespace {
template <typename T, typename I>
void add_sparse_impl(T* p, const SparseAverage& a, T alpha) {
  const I* idx = a.indices.data_ptr<I>();
  const T* val = a.values.data_ptr<T>();
  constexpr int64_t kAhead = 32;  // the entries lie on scattered cache lines: fetch ahead
  for (int64_t j = 0, m = a.count(); j < m; ++j) {
    if (j + kAhead < m) __builtin_prefetch(p + idx[j + kAhead], 1, 0);
    p[idx[j]] = p[idx[j]] + alpha * val[j];  // add_(avg, alpha) at that entry
  }
}
}  // namespace

void add_sparse_(const at::Tensor& dense, const SparseAverage& a, double alpha) {
  if (a.count() == 0) return;
  const at::ScalarType t = dense.scalar_type();
  TORCH_CHECK(dense.is_cpu() && dense.is_contiguous() && dense.numel() == a.numel && t == a.values.scalar_type() &&
                  (t == at::kFloat || t == at::kDouble),
              "add_sparse_: a coalesced average of ", a.numel, " ", a.values.scalar_type(),
              " entries does not fit a tensor of sizes ", dense.sizes(), ", ", dense.scalar_type(),
              (dense.is_contiguous() ? "" : ", non-contiguous"), " on ", dense.device());
  const bool wide = a.indices.scalar_type() == at::kLong;
  if (t == at::kFloat) {
    float* p = dense.data_ptr<float>();
    if (wide) add_sparse_impl<float, int64_t>(p, a, static_cast<float>(alpha));
    else add_sparse_impl<float, int32_t>(p, a, static_cast<float>(alpha));
  } else {
    double* p = dense.data_ptr<double>();
    if (wide) add_sparse_impl<double, int64_t>(p, a, alpha);
    else add_sparse_impl<double, int32_t>(p, a, alpha);
  }
}

int64_t index_wire_bytes(int64_t count, int64_t numel, IndexCoding coding) {
  return block16(coding, count, numel) ? block16_bytes(count, numel) : plain_index_bytes(count, numel);
}

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

void GradientExchange::average_sparse(std::vector<SparseSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  const int me = comm_.rank();
  auto t0 = Clock::now();
  int64_t payload = 0;
  for (auto& s : slots) payload += s.local->wire_bytes();

  if (world == 1) {
    const std::vector<OutputPlan> plans = begin_outputs(slots, /*may_defer=*/false);
    ZeroOutputs zeroing(slots, plans, /*may_overlap=*/false);
    for (auto& s : slots) {
      if (coalesces(s)) {
        const Compressed& c = *s.local;
        Compressed mine = c;  // as the wire would carry it: contiguous, the ABI's dtypes
        if (c.count() > 0) {
          mine.values = c.values.to(c.dtype).contiguous();
          mine.indices = c.indices.to(index_dtype_for(c.numel)).contiguous();
        }
        std::vector<Compressed> parts;
        std::vector<int> from;
        if (c.count() > 0) parts.push_back(mine), from.push_back(0);
        coalesce(*s.coalesced, parts, from, 1, c);
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
    stats.payload_bytes += payload;
    stats.bytes_sent += payload;
    stats.comm_ms += ms_since(t0);
    return;
  }

  // 1. Counts: selections may differ in size between ranks (threshold compressors), and
  //    an empty selection must still take part, or the collective would hang.
  const int64_t P = static_cast<int64_t>(slots.size());
  const std::vector<OutputPlan> plans = begin_outputs(slots, /*may_defer=*/true);
  ZeroOutputs zeroing(slots, plans, /*may_overlap=*/true);  // overlaps the two allgathers
  at::Tensor counts = at::empty({P}, at::kLong);
  bool counts_known = true;
  for (int64_t i = 0; i < P; ++i) {
    counts.data_ptr<int64_t>()[i] = slots[i].local->count();
    counts_known = counts_known && slots[i].expected_count >= 0;
  }
  std::vector<at::Tensor> all_counts;
  if (counts_known) {  // every rank knows every count already: no collective needed
    for (int64_t i = 0; i < P; ++i)
      TORCH_CHECK(slots[i].local->count() == slots[i].expected_count, "sparse exchange: slot ", i, " selected ",
                  slots[i].local->count(), " entries but every rank expects ", slots[i].expected_count,
                  " (a compressor whose count varies must not declare a fixed count)");
    all_counts.assign(world, counts);
  } else {
    all_counts = comm_.allgather(counts);
  }
  std::vector<Layout> layouts;
  int64_t max_total = 0;
  for (int r = 0; r < world; ++r) {
    at::Tensor c = all_counts[r].contiguous();
    layouts.push_back(layout_for(slots, c.data_ptr<int64_t>(), coding_));
    max_total = std::max(max_total, layouts.back().total);
  }

  // 2. Pack this rank's values and indices into one padded byte buffer; gather it.
  const int64_t packed_bytes = std::max<int64_t>(max_total, 8);
  if (!packed_.defined() || packed_.numel() != packed_bytes) packed_ = at::zeros({packed_bytes}, at::kByte);
  at::Tensor& packed = packed_;  // bytes outside this call's value and index ranges are never read
  const Layout& mine = layouts[me];
  std::vector<int64_t> order;
  for (int64_t i = 0; i < P; ++i) {
    const Compressed& c = *slots[i].local;
    const int64_t n = c.count();
    if (n == 0) continue;
    at::Tensor vb = as_bytes(c.values.to(c.dtype)), idx = c.indices.to(index_dtype_for(c.numel)).contiguous();
    if (!block16(coding_, n, c.numel)) {
      packed.narrow(0, mine.value_offset[i], vb.numel()).copy_(vb);
      packed.narrow(0, mine.index_offset[i], n * idx.element_size()).copy_(as_bytes(idx));
      continue;
    }
    uint8_t* dst = packed.data_ptr<uint8_t>() + mine.index_offset[i];
    if (idx.scalar_type() == at::kInt) encode_block16(idx.data_ptr<int32_t>(), n, c.numel, dst, order);
    else encode_block16(idx.data_ptr<int64_t>(), n, c.numel, dst, order);
    if (order.empty()) {
      packed.narrow(0, mine.value_offset[i], vb.numel()).copy_(vb);
    } else {  // the values follow their indices into block order
      const size_t es = c10::elementSize(c.dtype);
      const uint8_t* from = vb.data_ptr<uint8_t>();
      uint8_t* to = packed.data_ptr<uint8_t>() + mine.value_offset[i];
      for (size_t pos = 0; pos < order.size(); ++pos) std::memcpy(to + pos * es, from + order[pos] * es, es);
    }
  }
  comm_.allgather_into(packed, gathered_);
  const std::vector<at::Tensor>& gathered = gathered_;

  // 3. Decode in rank order, so every rank adds the same numbers in the same order, then
  //    divide by W. Entries no rank selected are +0 and stay +0, so when few entries were
  //    touched only those are divided: the same bits as a full div_, without another pass
  //    over the whole tensor.
  zeroing.wait();
  decoded_.resize(static_cast<size_t>(P * world));
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
      if (block16(coding_, n, local.numel)) {
        at::Tensor& idx = decoded_[static_cast<size_t>(i * world + r)];
        if (!idx.defined() || idx.scalar_type() != it) idx = at::empty({0}, it);
        idx.resize_({n});  // reused from call to call
        const uint8_t* src = gathered[r].data_ptr<uint8_t>() + layouts[r].index_offset[i];
        if (it == at::kInt) decode_block16(src, n, local.numel, idx.data_ptr<int32_t>(), r);
        else decode_block16(src, n, local.numel, idx.data_ptr<int64_t>(), r);
        c.indices = idx;
      } else {
        c.indices = gathered[r].narrow(0, layouts[r].index_offset[i], n * c10::elementSize(it)).view(it);
      }
      parts.push_back(std::move(c));
      from.push_back(r);
    }
    if (coalesces(slots[i])) {
      coalesce(*slots[i].coalesced, parts, from, world, local);
      continue;
    }
    std::vector<int64_t>* written = record_into(slots[i]);
    const Stale stale = plans[i].deferred ? plans[i].stale : Stale();  // what the decode still has to clear
    if (parts.empty()) {  // nothing sent: the output is all +0
      clear_stale(avg, stale);
      end_output(slots[i], written != nullptr, Written::ListedSorted);
      continue;
    }
    Written how = Written::Listed;
    if (mean_raw(avg, parts, from, world, written, stale, &how)) {
      end_output(slots[i], written != nullptr, how);
      continue;
    }
    clear_stale(avg, stale);  // mean_raw wrote nothing
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
    if (written)  // decompress_add_ wrote the selected entries only; +0 / W is +0 elsewhere
      for (const auto& c : parts) {
        at::Tensor idx = c.indices.to(at::kLong).contiguous();
        written->insert(written->end(), idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
      }
    end_output(slots[i], written != nullptr, Written::Listed);
  }

  const int64_t count_bytes = counts_known ? 0 : counts.numel() * 8;
  const int64_t sent = packed.numel() + count_bytes;
  stats.payload_bytes += payload + count_bytes;
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
      if (slots[i].reuse) slots[i].reuse->reset();
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
