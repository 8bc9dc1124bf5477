// sparse_decode.cpp — the dense decodes (sweep, merge, scatter), the coalesced decode and the
// sparse update. See sparse_decode.h.
#include "sparse_decode.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cddp {
namespace detail {
namespace {

using Written = GradientExchange::Written;

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

}  // namespace

// Clears what `stale` names, so that the output is +0 everywhere.
void clear_stale(at::Tensor& t, const Stale& stale) {
  if (stale.everything) {
    if (t.is_cpu() && t.is_contiguous()) std::memset(t.data_ptr(), 0, t.numel() * t.element_size());  // streams
    else t.zero_();
  } else if (stale.list) {
    zero_entries(t, *stale.list);
  }
}

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

namespace {

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

}  // namespace

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

}  // namespace detail

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

}  // namespace cddp
