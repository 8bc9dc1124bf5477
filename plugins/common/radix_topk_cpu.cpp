// radix_topk_cpu.cpp — see radix_topk_cpu.h.
//
// Top-k of |x| (T = float or double, Key = the unsigned magnitude bits, kBits = 31 or 63):
//   pass 1  per chunk: [[u = m·u + g; x = u;] acc = x + r; r = acc;] key = bits(acc) & mask; ++hist_c[key >> (kBits-12)].
//           NaN: a key above +inf's, i.e. a count in the buckets above inf's (or, only when
//           inf's own bucket is not empty, a scan).
//   select  merge the chunk histograms; from the top bucket down find the bucket B holding the
//           k-th largest key: `above` elements lie in buckets > B, `need` = k - above of the
//           hist[B] boundary candidates are to be taken.
//   pass 2  per chunk, at the offset given by the prefix sum of its own histogram: copy every
//           element with bucket >= B (value, index) in index order into a buffer — the output
//           itself when the whole boundary bucket is taken — and its boundary candidates
//           (bits, index) into a candidate list. Fused: positions in buckets > B are certainly
//           selected and are zeroed in the residual right away, while their cache line is hot.
//   resolve radix levels (12, 7 bits for float) over the candidates find the exact threshold
//           key T and the last index I taken among the keys equal to T (ties: lower index).
//   filter  per chunk: keep key > T || (key == T && index <= I); set each candidate's
//           residual to +0 (taken) or acc (not taken).
// The float compactions have AVX2 kernels (left-packing with a permutation table), chosen at
// run time; SSE2/scalar paths elsewhere. Random-k computes Philox eight blocks at a time there.
// Everything is written in index order at offsets computed from counts, so the output does not
// depend on the chunking, hence not on the number of threads.
#include "radix_topk_cpu.h"

#include "philox.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
// AVX2 kernels for the float compactions, chosen at run time (the build targets baseline x86-64).
#if defined(__x86_64__) && defined(__GNUC__)
#define CDDP_RADIX_AVX2 1
#include <immintrin.h>
#endif

#if defined(CDDP_RADIX_PROFILE)  // phase timings on stderr, for development only
#include <chrono>
#include <cstdio>
#include <ctime>
inline double cddp_prof_now() {  // thread CPU time: robust on a shared machine, 1 thread
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
#define CDDP_PROF_T(name) const double name = cddp_prof_now()
#define CDDP_PROF_MS(a, b) ((b) - (a))
#else
#define CDDP_PROF_T(name)
#endif

namespace cddp::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// Workspace: raw buffers that grow (by 1.5x at least) and are kept between calls.
class RawBuf {
 public:
  RawBuf() = default;
  RawBuf(const RawBuf&) = delete;
  RawBuf& operator=(const RawBuf&) = delete;
  RawBuf(RawBuf&& o) noexcept : p_(o.p_), cap_(o.cap_) { o.p_ = nullptr; o.cap_ = 0; }
  ~RawBuf() { std::free(p_); }

  // Room for `count` T's; previous contents are lost when it grows.
  template <class T>
  T* get(std::size_t count) {
    ensure(count * sizeof(T), /*keep=*/false);
    return static_cast<T*>(p_);
  }
  // Room for `count` T's; previous contents are kept.
  template <class T>
  T* grow_keep(std::size_t count) {
    ensure(count * sizeof(T), /*keep=*/true);
    return static_cast<T*>(p_);
  }
  template <class T>
  T* data() const {
    return static_cast<T*>(p_);
  }
  std::size_t capacity() const noexcept { return cap_; }
  void release() noexcept {
    std::free(p_);
    p_ = nullptr;
    cap_ = 0;
  }

 private:
  void ensure(std::size_t bytes, bool keep) {
    if (bytes <= cap_) return;
    std::size_t want = std::max(bytes, cap_ + cap_ / 2);
    want = (want + 63) & ~static_cast<std::size_t>(63);
    void* q = nullptr;
    if (keep) {
      q = std::realloc(p_, want);
    } else {
      release();
      q = std::malloc(want);
    }
    if (q == nullptr) throw std::bad_alloc();
    p_ = q;
    cap_ = want;
  }

  void* p_ = nullptr;
  std::size_t cap_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Keys.
template <class T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using Key = uint32_t;
  static constexpr int kBits = 31;
  static constexpr Key kMask = 0x7fffffffu;
  static constexpr Key kInf = 0x7f800000u;
};
template <>
struct KeyTraits<double> {
  using Key = uint64_t;
  static constexpr int kBits = 63;
  static constexpr Key kMask = 0x7fffffffffffffffull;
  static constexpr Key kInf = 0x7ff0000000000000ull;
};

template <class T>
inline typename KeyTraits<T>::Key mag_key(T v) {
  typename KeyTraits<T>::Key b;
  std::memcpy(&b, &v, sizeof b);
  return b & KeyTraits<T>::kMask;
}

constexpr int kDigitBits = 12;
constexpr int64_t kBuckets = int64_t{1} << kDigitBits;
constexpr int64_t kMinChunk = int64_t{1} << 16;  // elements; smaller arrays run on one thread
constexpr int64_t kStage = 1024;                 // block of the compactions (cache-hot post-scan)

// ---------------------------------------------------------------------------------------------
// Chunking: at most at::get_num_threads() chunks of >= kMinChunk elements, each < 2^31 elements
// (the per-chunk histograms count in uint32).
int64_t plan_chunks(int64_t n) {
  int64_t threads = at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads());
  int64_t c = std::min<int64_t>(threads, std::max<int64_t>(1, n / kMinChunk));
  c = std::max<int64_t>(c, (n + (int64_t{1} << 31) - 1) >> 31);
  return std::max<int64_t>(c, 1);
}

inline int64_t chunk_begin(int64_t n, int64_t nchunks, int64_t c) {
  return static_cast<int64_t>(static_cast<__int128>(n) * c / nchunks);
}

template <class F>
void run_chunks(int64_t nchunks, const F& f) {
  if (nchunks == 1) {
    f(int64_t{0});
    return;
  }
  at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) f(c);
  });
}

template <class Index>
void check_sizes(int64_t n, int64_t k, const char* what) {
  if (n < 0 || k < 0 || k > n) {
    throw std::invalid_argument(std::string(what) + ": need 0 <= k <= n, got n=" +
                                std::to_string(n) + " k=" + std::to_string(k));
  }
  if (std::is_same_v<Index, int32_t> && n > (int64_t{1} << 31)) {
    throw std::invalid_argument(std::string(what) + ": n=" + std::to_string(n) +
                                " does not fit int32 indices; use int64 indices");
  }
}

// ---------------------------------------------------------------------------------------------
// Exact resolution among candidates. Given `m` candidates (keys in index order, all sharing
// their top `known` bits out of `key_bits`; the key of a stored word w is w & kmask), find T
// and I such that exactly `need` of them (1 <= need <= m) satisfy
// key > T || (key == T && index <= I). Scratch holds the shrinking candidate list.
struct Threshold {
  uint64_t key;
  int64_t last_index;
};

template <class Key, class Index>
Threshold resolve(const Key* keys, const Index* idx, int64_t m, int64_t need, Key kmask,
                  int key_bits, int known, RawBuf& scratch_k, RawBuf& scratch_i) {
  const Key* ck = keys;
  const Index* ci = idx;
  int64_t cm = m;
  Key* wk = nullptr;
  Index* wi = nullptr;
  std::vector<int64_t> h;
  while (known < key_bits) {
    const int d = std::min(kDigitBits, key_bits - known);
    const int shift = key_bits - known - d;
    const Key dmask = static_cast<Key>((Key{1} << d) - 1);
    h.assign(static_cast<std::size_t>(1) << d, 0);
    for (int64_t j = 0; j < cm; ++j) {
      ++h[static_cast<std::size_t>(((ck[j] & kmask) >> shift) & dmask)];
    }
    int64_t cum = 0;
    int64_t digit = static_cast<int64_t>(dmask);
    for (; digit > 0; --digit) {
      if (cum + h[digit] >= need) break;
      cum += h[digit];
    }
    need -= cum;
    if (h[digit] != cm) {  // keep only the candidates with this digit, in order
      if (wk == nullptr) {
        wk = scratch_k.get<Key>(static_cast<std::size_t>(h[digit]));
        wi = scratch_i.get<Index>(static_cast<std::size_t>(h[digit]));
      }
      int64_t q = 0;
      for (int64_t j = 0; j < cm; ++j) {
        if (static_cast<int64_t>(((ck[j] & kmask) >> shift) & dmask) == digit) {
          wk[q] = ck[j];
          wi[q] = ci[j];
          ++q;
        }
      }
      ck = wk;
      ci = wi;
      cm = q;
    }
    known += d;
  }
  // All remaining candidates have the same key; the first `need` of them are taken.
  return Threshold{static_cast<uint64_t>(ck[0] & kmask), static_cast<int64_t>(ci[need - 1])};
}

// ---------------------------------------------------------------------------------------------
// Pass 1: histogram of the top 12 magnitude bits (+ fused acc). NaN needs no separate test:
// NaN keys lie above +inf's, in the top buckets. kSub interleaved sub-histograms (summed at
// the end) break the store-to-load dependency between equal consecutive buckets.
constexpr int kSub = 4;

// kMomentum (needs kFused): DGC's momentum correction in front, x unused: u ← m·u + g, then
// acc = u + r. Two roundings, fl(fl(m·u) + g), as ATen's u.mul_(m).add_(g) (this file is built
// with -ffp-contract=off, so no multiply-add is fused).
template <class T>
struct MomentumIn {
  T* u;        // the velocity, updated in place
  const T* g;  // this step's gradient
  T m;         // the momentum factor
};

template <class T, bool kFused, bool kMomentum = false>
void hist_pass(const T* __restrict x, T* __restrict r, int64_t lo, int64_t hi,
               uint32_t* __restrict h, uint32_t* __restrict sub, const MomentumIn<T>& mom = {}) {
  static_assert(kFused || !kMomentum, "the momentum prologue feeds error feedback");
  T* __restrict u = mom.u;
  const T* __restrict g = mom.g;
  // The input of entry j: x[j], or the updated velocity.
  auto input = [&](int64_t j) -> T {
    if constexpr (kMomentum) {
      const T w = mom.m * u[j] + g[j];
      u[j] = w;
      return w;
    } else {
      return x[j];
    }
  };
  constexpr int shift = KeyTraits<T>::kBits - kDigitBits;
  uint32_t* hs = kSub == 1 ? h : sub;
  std::memset(hs, 0, sizeof(uint32_t) * kBuckets * kSub);
  int64_t i = lo;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float> && kSub == 4 && kFused) {
    // Four lanes at a time: the add, the store and the bucket arithmetic in SSE2, then one
    // increment per lane into that lane's sub-histogram.
    const __m128i mask = _mm_set1_epi32(0x7fffffff);
    [[maybe_unused]] const __m128 mv = _mm_set1_ps(static_cast<float>(mom.m));
    for (; i + 8 <= hi; i += 8) {
      __m128 v0, v1;
      if constexpr (kMomentum) {  // u = m·u + g, rounded after the product and after the sum
        v0 = _mm_add_ps(_mm_mul_ps(mv, _mm_loadu_ps(u + i)), _mm_loadu_ps(g + i));
        v1 = _mm_add_ps(_mm_mul_ps(mv, _mm_loadu_ps(u + i + 4)), _mm_loadu_ps(g + i + 4));
        _mm_storeu_ps(u + i, v0);
        _mm_storeu_ps(u + i + 4, v1);
      } else {
        v0 = _mm_loadu_ps(x + i);
        v1 = _mm_loadu_ps(x + i + 4);
      }
      if constexpr (kFused) {
        v0 = _mm_add_ps(v0, _mm_loadu_ps(r + i));
        v1 = _mm_add_ps(v1, _mm_loadu_ps(r + i + 4));
        _mm_storeu_ps(r + i, v0);
        _mm_storeu_ps(r + i + 4, v1);
      }
      const __m128i b0 = _mm_srli_epi32(_mm_and_si128(_mm_castps_si128(v0), mask), shift);
      const __m128i b1 = _mm_srli_epi32(_mm_and_si128(_mm_castps_si128(v1), mask), shift);
      const uint64_t q0 = static_cast<uint64_t>(_mm_cvtsi128_si64(b0));
      const uint64_t q1 = static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(b0, b0)));
      const uint64_t q2 = static_cast<uint64_t>(_mm_cvtsi128_si64(b1));
      const uint64_t q3 = static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(b1, b1)));
      ++hs[0 * kBuckets + static_cast<uint32_t>(q0)];
      ++hs[1 * kBuckets + (q0 >> 32)];
      ++hs[2 * kBuckets + static_cast<uint32_t>(q1)];
      ++hs[3 * kBuckets + (q1 >> 32)];
      ++hs[0 * kBuckets + static_cast<uint32_t>(q2)];
      ++hs[1 * kBuckets + (q2 >> 32)];
      ++hs[2 * kBuckets + static_cast<uint32_t>(q3)];
      ++hs[3 * kBuckets + (q3 >> 32)];
    }
  }
#endif
  for (; i + kSub <= hi; i += kSub) {
    for (int l = 0; l < kSub; ++l) {
      T v = input(i + l);
      if constexpr (kFused) {
        v = v + r[i + l];
        r[i + l] = v;
      }
      ++hs[l * kBuckets + (mag_key(v) >> shift)];
    }
  }
  for (; i < hi; ++i) {
    T v = input(i);
    if constexpr (kFused) {
      v = v + r[i];
      r[i] = v;
    }
    ++hs[mag_key(v) >> shift];
  }
  if (kSub > 1) {
    for (int64_t b = 0; b < kBuckets; ++b) {
      uint32_t t = 0;
      for (int u = 0; u < kSub; ++u) t += hs[u * kBuckets + b];
      h[b] = t;
    }
  }
}

template <class T>
bool has_nan(const T* x, int64_t n, int64_t nchunks) {
  std::vector<char> found(static_cast<std::size_t>(nchunks), 0);
  run_chunks(nchunks, [&](int64_t c) {
    const int64_t lo = chunk_begin(n, nchunks, c), hi = chunk_begin(n, nchunks, c + 1);
    bool f = false;
    for (int64_t i = lo; i < hi; ++i) f |= mag_key(x[i]) > KeyTraits<T>::kInf;
    found[c] = f;
  });
  return std::find(found.begin(), found.end(), 1) != found.end();
}

#if defined(CDDP_RADIX_AVX2)
// Left-packing table: row m lists the lanes whose bit is set in m, first.
struct PackTable {
  alignas(32) int32_t lane[256][8];
  PackTable() : lane{} {
    for (int m = 0; m < 256; ++m) {
      int p = 0;
      for (int l = 0; l < 8; ++l) {
        if (m & (1 << l)) lane[m][p++] = l;
      }
      for (; p < 8; ++p) lane[m][p] = 0;
    }
  }
};
const PackTable kPack;

std::atomic<bool> g_avx2_allowed{true};

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  return has && g_avx2_allowed.load(std::memory_order_relaxed);
}

// One 8-lane group of compact_avx2: left-pack the selected lanes (values and indices) to d/x.
template <class Index>
__attribute__((target("avx2,popcnt"), always_inline)) inline void pack8(
    int64_t at, __m256 v, __m256i sel, float*& d, Index*& x) {
  const int m = _mm256_movemask_ps(_mm256_castsi256_ps(sel));
  const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack.lane[m]));
  _mm256_storeu_ps(d, _mm256_permutevar8x32_ps(v, perm));
  if constexpr (std::is_same_v<Index, int32_t>) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(x),
                        _mm256_add_epi32(perm, _mm256_set1_epi32(static_cast<int32_t>(at))));
  } else {
    const __m256i base = _mm256_set1_epi64x(at);
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(x),
        _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(perm)), base));
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(x + 4),
        _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(perm, 1)), base));
  }
  const int c = _mm_popcnt_u32(static_cast<unsigned>(m));
  d += c;
  x += c;
}

// Branch-free compaction of src[i..e) (|x| bits >= thr kept), 8 lanes at a time, while the
// destination has room for a full 8-lane store; returns where it stopped. kSkip: groups of 32
// with nothing kept are skipped with one test (very sparse selections).
template <class Index, bool kSkip>
__attribute__((target("avx2,popcnt"))) int64_t compact_avx2(const float* src, int64_t i,
                                                             int64_t e, uint32_t thr,
                                                             float*& dv, Index*& di,
                                                             const float* dv_end) {
  const __m256i mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i tv = _mm256_set1_epi32(static_cast<int32_t>(thr) - 1);  // keys < 2^31
  float* d = dv;
  Index* x = di;
  if constexpr (kSkip) {
    for (; i + 32 <= e && d + 32 <= dv_end; i += 32) {
      const __m256 v0 = _mm256_loadu_ps(src + i), v1 = _mm256_loadu_ps(src + i + 8);
      const __m256 v2 = _mm256_loadu_ps(src + i + 16), v3 = _mm256_loadu_ps(src + i + 24);
      const __m256i k0 = _mm256_and_si256(_mm256_castps_si256(v0), mask);
      const __m256i k1 = _mm256_and_si256(_mm256_castps_si256(v1), mask);
      const __m256i k2 = _mm256_and_si256(_mm256_castps_si256(v2), mask);
      const __m256i k3 = _mm256_and_si256(_mm256_castps_si256(v3), mask);
      const __m256i s0 = _mm256_cmpgt_epi32(k0, tv), s1 = _mm256_cmpgt_epi32(k1, tv);
      const __m256i s2 = _mm256_cmpgt_epi32(k2, tv), s3 = _mm256_cmpgt_epi32(k3, tv);
      const __m256i any = _mm256_or_si256(_mm256_or_si256(s0, s1), _mm256_or_si256(s2, s3));
      if (_mm256_testz_si256(any, any)) continue;
      pack8<Index>(i, v0, s0, d, x);
      pack8<Index>(i + 8, v1, s1, d, x);
      pack8<Index>(i + 16, v2, s2, d, x);
      pack8<Index>(i + 24, v3, s3, d, x);
    }
  }
  for (; i + 8 <= e && d + 8 <= dv_end; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    const __m256i key = _mm256_and_si256(_mm256_castps_si256(v), mask);
    pack8<Index>(i, v, _mm256_cmpgt_epi32(key, tv), d, x);
  }
  dv = d;
  di = x;
  return i;
}

// The final filter, int32 indices: keep key > T || (key == T && index <= I).
__attribute__((target("avx2,popcnt"))) int64_t filter_avx2(const float* __restrict bv,
                                                            const int32_t* __restrict bi,
                                                            int64_t j, int64_t e, uint32_t T,
                                                            int64_t I, float*& ov, int32_t*& oi,
                                                            const float* ov_end) {
  const __m256i mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i tv = _mm256_set1_epi32(static_cast<int32_t>(T));  // keys < 2^31
  const __m256i iv = _mm256_set1_epi32(static_cast<int32_t>(I));  // 0 <= I < 2^31
  float* d = ov;
  int32_t* x = oi;
  for (; j + 8 <= e && d + 8 <= ov_end; j += 8) {
    const __m256 v = _mm256_loadu_ps(bv + j);
    const __m256i ix = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bi + j));
    const __m256i key = _mm256_and_si256(_mm256_castps_si256(v), mask);
    const __m256i gt = _mm256_cmpgt_epi32(key, tv);
    const __m256i tie = _mm256_andnot_si256(_mm256_cmpgt_epi32(ix, iv), _mm256_cmpeq_epi32(key, tv));
    const int m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(gt, tie)));
    const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack.lane[m]));
    _mm256_storeu_ps(d, _mm256_permutevar8x32_ps(v, perm));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(x), _mm256_permutevar8x32_epi32(ix, perm));
    const int c = _mm_popcnt_u32(static_cast<unsigned>(m));
    d += c;
    x += c;
  }
  ov = d;
  oi = x;
  return j;
}
#endif

// Pass 2: copy every element with key >= thr (value, index) in order to dv/di; of those, the
// ones with key < thr_hi (the boundary bucket) also go, as raw bits, to ck/ci when `cand`. The
// others are certainly selected and are zeroed in `zero` (the residual) when it is non-null;
// so are the candidates with key >= zthr, a guess of the threshold (the caller fixes the
// guesses that were wrong once the threshold is known).
// The destination holds exactly the kept elements: the branch-free stores run up to the last
// kept element only, so they never step past it.
template <class T, class Index>
void compact_pass(const T* __restrict src, int64_t lo, int64_t hi, typename KeyTraits<T>::Key thr,
                  typename KeyTraits<T>::Key thr_hi, T* dv, Index* di,
                  bool cand, typename KeyTraits<T>::Key* __restrict ck, Index* __restrict ci,
                  T* __restrict zero, typename KeyTraits<T>::Key zthr, bool sparse,
                  const T* dv_end) {
  using Key = typename KeyTraits<T>::Key;
  int64_t end = hi;  // one past the last kept element; the caller ensures there is one
  while (mag_key(src[end - 1]) < thr) --end;
  for (int64_t b = lo; b < end; b += kStage) {
    const int64_t e = std::min(end, b + kStage);
    T* const v0 = dv;
    const Index* const i0 = di;
    int64_t i = b;
#if defined(CDDP_RADIX_AVX2)
    if constexpr (std::is_same_v<T, float>) {
      if (cpu_has_avx2()) {
        i = sparse ? compact_avx2<Index, true>(src, i, e, thr, dv, di, dv_end)
                   : compact_avx2<Index, false>(src, i, e, thr, dv, di, dv_end);
      }
    }
#endif
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, float>) {
      if (sparse && i == b) {
        const __m128i mask = _mm_set1_epi32(0x7fffffff);
        const __m128i tv = _mm_set1_epi32(static_cast<int32_t>(thr) - 1);  // keys < 2^31
        for (; i + 16 <= e; i += 16) {
          const __m128i* s = reinterpret_cast<const __m128i*>(src + i);
          const __m128i a0 = _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128(s + 0), mask), tv);
          const __m128i a1 = _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128(s + 1), mask), tv);
          const __m128i a2 = _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128(s + 2), mask), tv);
          const __m128i a3 = _mm_cmpgt_epi32(_mm_and_si128(_mm_loadu_si128(s + 3), mask), tv);
          const __m128i any = _mm_or_si128(_mm_or_si128(a0, a1), _mm_or_si128(a2, a3));
          if (_mm_movemask_epi8(any) == 0) continue;
          unsigned bits = static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(a0))) |
                          (static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(a1))) << 4) |
                          (static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(a2))) << 8) |
                          (static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(a3))) << 12);
          do {
            const int j = __builtin_ctz(bits);
            bits &= bits - 1;
            *dv++ = src[i + j];
            *di++ = static_cast<Index>(i + j);
          } while (bits != 0);
        }
      }
    }
#endif
    for (; i < e; ++i) {  // branch-free: always store, advance when kept
      const T v = src[i];
      *dv = v;
      *di = static_cast<Index>(i);
      const std::size_t kept = mag_key(v) >= thr ? 1 : 0;
      dv += kept;
      di += kept;
    }
    if (cand || zero != nullptr) {  // the block just written, still in cache
      const int64_t p = dv - v0;
      for (int64_t j = 0; j < p; ++j) {
        const Key key = mag_key(v0[j]);
        if (key < thr_hi) {
          if (cand) {
            std::memcpy(ck++, &v0[j], sizeof(Key));
            *ci++ = i0[j];
          }
          if (zero != nullptr && key >= zthr) zero[i0[j]] = T(0);
        } else if (zero != nullptr) {
          zero[i0[j]] = T(0);
        }
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
struct RadixTopK::Impl {
  RawBuf hist;          // nchunks x kBuckets uint32
  RawBuf buf_v, buf_i;  // elements at or above the boundary bucket (when not the output)
  RawBuf cand_k, cand_i;
  RawBuf scratch_k, scratch_i;
  std::vector<RawBuf> chunk_k, chunk_i;  // random-k per-chunk candidates

  std::size_t bytes() const noexcept {
    std::size_t s = hist.capacity() + buf_v.capacity() + buf_i.capacity() + cand_k.capacity() +
                    cand_i.capacity() + scratch_k.capacity() + scratch_i.capacity();
    for (const auto& b : chunk_k) s += b.capacity();
    for (const auto& b : chunk_i) s += b.capacity();
    return s;
  }
  void release() noexcept {
    hist.release();
    buf_v.release();
    buf_i.release();
    cand_k.release();
    cand_i.release();
    scratch_k.release();
    scratch_i.release();
    chunk_k.clear();
    chunk_i.clear();
  }

  // mom != nullptr: x is ignored and the input is DGC's corrected velocity (MomentumIn).
  template <class T, class Index>
  void topk(const T* x, T* residual, int64_t n, int64_t k, T* out_v, Index* out_i,
            const MomentumIn<T>* mom = nullptr);

  template <class Index>
  void randomk(uint64_t seed, int64_t step, int64_t param_index, int64_t n, int64_t k,
               Index* out_i);
};

template <class T, class Index>
void RadixTopK::Impl::topk(const T* x, T* residual, int64_t n, int64_t k, T* out_v,
                           Index* out_i, const MomentumIn<T>* mom) {
  using Key = typename KeyTraits<T>::Key;
  constexpr int kBits = KeyTraits<T>::kBits;
  constexpr int shift = kBits - kDigitBits;
  check_sizes<Index>(n, k, "RadixTopK::select");
  if (n == 0) return;
  if ((mom ? (mom->u == nullptr || mom->g == nullptr || residual == nullptr) : x == nullptr) ||
      (k > 0 && (out_v == nullptr || out_i == nullptr))) {
    throw std::invalid_argument("RadixTopK::select: null pointer");
  }
  const int64_t nchunks = plan_chunks(n);
  const int64_t hist_words = nchunks * kBuckets * (1 + (kSub > 1 ? kSub : 0));
  uint32_t* H = hist.get<uint32_t>(static_cast<std::size_t>(hist_words));

  CDDP_PROF_T(t0);
  // Pass 1.
  run_chunks(nchunks, [&](int64_t c) {
    const int64_t lo = chunk_begin(n, nchunks, c), hi = chunk_begin(n, nchunks, c + 1);
    uint32_t* h = H + c * kBuckets;
    uint32_t* sub = H + nchunks * kBuckets + c * kBuckets * kSub;
    if (mom != nullptr) {
      hist_pass<T, true, true>(nullptr, residual, lo, hi, h, sub, *mom);
    } else if (residual != nullptr) {
      hist_pass<T, true>(x, residual, lo, hi, h, sub);
    } else {
      hist_pass<T, false>(x, nullptr, lo, hi, h, sub);
    }
  });
  std::vector<int64_t> total(kBuckets, 0);
  for (int64_t c = 0; c < nchunks; ++c) {
    const uint32_t* h = H + c * kBuckets;
    for (int64_t b = 0; b < kBuckets; ++b) total[b] += h[b];
  }
  // NaN: keys above +inf's. Buckets above inf's hold only NaNs; inf's own bucket may hold
  // both, and is looked into only when it is not empty (an inf or NaN is present).
  const T* src = residual != nullptr ? residual : x;
  {
    constexpr int64_t inf_bucket = static_cast<int64_t>(KeyTraits<T>::kInf >> shift);
    bool nan = false;
    for (int64_t b = inf_bucket + 1; b < kBuckets; ++b) nan = nan || total[b] != 0;
    if (!nan && total[inf_bucket] != 0) nan = has_nan(src, n, nchunks);
    if (nan) {
      throw std::invalid_argument(residual != nullptr
                                      ? "RadixTopK::select: NaN in x + residual"
                                      : "RadixTopK::select: NaN in input");
    }
  }
  if (k == 0) return;
  CDDP_PROF_T(t1);

  // Boundary bucket.
  int64_t B = kBuckets - 1, above = 0;
  for (; B > 0; --B) {
    if (above + total[B] >= k) break;
    above += total[B];
  }
  const int64_t need = k - above;    // 1 <= need <= total[B]
  const int64_t M = above + total[B];  // elements with bucket >= B
  const bool whole = (M == k);        // the boundary bucket is taken entirely
  const Key thr = static_cast<Key>(static_cast<Key>(B) << shift);
  const Key thr_hi = static_cast<Key>(static_cast<Key>(B + 1) << shift);  // fits: kBits < key width

  std::vector<int64_t> moff(static_cast<std::size_t>(nchunks + 1), 0);
  std::vector<int64_t> coff(static_cast<std::size_t>(nchunks + 1), 0);
  for (int64_t c = 0; c < nchunks; ++c) {
    const uint32_t* h = H + c * kBuckets;
    int64_t m = 0;
    for (int64_t b = B; b < kBuckets; ++b) m += h[b];
    moff[c + 1] = moff[c] + m;
    coff[c + 1] = coff[c] + h[B];
  }

  T* dv = out_v;
  Index* di = out_i;
  Key* ck = nullptr;
  Index* ci = nullptr;
  if (!whole) {
    dv = buf_v.get<T>(static_cast<std::size_t>(M));
    di = buf_i.get<Index>(static_cast<std::size_t>(M));
    ck = cand_k.get<Key>(static_cast<std::size_t>(total[B]));
    ci = cand_i.get<Index>(static_cast<std::size_t>(total[B]));
  }
  const bool sparse = M * 256 < n;  // under 0.4% kept: skip empty groups of 32 with one test
  // Fused: a guess of the threshold key, interpolating linearly in the boundary bucket. Pass 2
  // zeroes the residual of the candidates above it while their lines are in cache; the filter
  // then rewrites only the candidates guessed wrong (few: they lie near the threshold) instead
  // of writing to a random line per candidate.
  const Key zthr = static_cast<Key>(
      thr_hi - static_cast<Key>(static_cast<double>(thr_hi - thr) * static_cast<double>(need) /
                                static_cast<double>(total[B])));

  CDDP_PROF_T(t2);
  // Pass 2.
  run_chunks(nchunks, [&](int64_t c) {
    const int64_t lo = chunk_begin(n, nchunks, c), hi = chunk_begin(n, nchunks, c + 1);
    if (moff[c + 1] == moff[c]) return;
    T* zero = residual;
    compact_pass<T, Index>(src, lo, hi, thr, whole ? Key{0} : thr_hi, dv + moff[c],
                           di + moff[c], !whole, whole ? nullptr : ck + coff[c],
                           whole ? nullptr : ci + coff[c], zero, zthr, sparse,
                           dv + moff[c + 1]);
  });
  CDDP_PROF_T(t3);
  if (whole) return;

  // Boundary: exact threshold among the candidates.
  const Threshold t =
      resolve<Key, Index>(ck, ci, total[B], need, KeyTraits<T>::kMask, kBits, kDigitBits,
                          scratch_k, scratch_i);
  const Key T_ = static_cast<Key>(t.key);
  const int64_t I_ = t.last_index;
  auto keep = [T_, I_](Key key, int64_t i) -> int64_t {  // branch-free
    return static_cast<int64_t>(key > T_) | (static_cast<int64_t>(key == T_) & (i <= I_));
  };
  constexpr Key kMask = KeyTraits<T>::kMask;

  CDDP_PROF_T(t4);
  // Output offsets: per chunk, the elements above the boundary bucket plus its selected
  // candidates.
  std::vector<int64_t> ooff(static_cast<std::size_t>(nchunks + 1), 0);
  for (int64_t c = 0; c < nchunks; ++c) {
    int64_t s = (moff[c + 1] - moff[c]) - (coff[c + 1] - coff[c]);
    for (int64_t j = coff[c]; j < coff[c + 1]; ++j) s += keep(ck[j] & kMask, ci[j]);
    ooff[c + 1] = ooff[c] + s;
  }
  // Filter.
  run_chunks(nchunks, [&](int64_t c) {
    if (residual != nullptr) {
      // A candidate's residual must be +0 if taken, else acc; pass 2 zeroed those with
      // key >= zthr. Fix the others.
      for (int64_t j = coff[c]; j < coff[c + 1]; ++j) {
        const Key key = ck[j] & kMask;
        const bool taken = keep(key, ci[j]) != 0;
        if (taken != (key >= zthr)) {
          const Key w = taken ? Key{0} : ck[j];
          std::memcpy(residual + ci[j], &w, sizeof(Key));
        }
      }
    }
    if (ooff[c + 1] == ooff[c]) return;
    T* ov = out_v + ooff[c];
    Index* oi = out_i + ooff[c];
    const T* __restrict bv = dv;
    const Index* __restrict bi = di;
    int64_t end = moff[c + 1];  // one past the last kept element: stores never pass it
    while (keep(mag_key(bv[end - 1]), static_cast<int64_t>(bi[end - 1])) == 0) --end;
    int64_t j = moff[c];
#if defined(CDDP_RADIX_AVX2)
    if constexpr (std::is_same_v<T, float> && std::is_same_v<Index, int32_t>) {
      if (cpu_has_avx2()) j = filter_avx2(bv, bi, j, end, T_, I_, ov, oi, out_v + ooff[c + 1]);
    }
#endif
    for (; j < end; ++j) {
      const T v = bv[j];
      const Index i = bi[j];
      *ov = v;
      *oi = i;
      const int64_t kept = keep(mag_key(v), static_cast<int64_t>(i));
      ov += kept;
      oi += kept;
    }
  });
#if defined(CDDP_RADIX_PROFILE)
  CDDP_PROF_T(t5);
  std::fprintf(stderr, "pass1 %.2f select %.2f pass2 %.2f resolve %.2f filter %.2f  M=%lld C=%lld\n",
               CDDP_PROF_MS(t0, t1), CDDP_PROF_MS(t1, t2), CDDP_PROF_MS(t2, t3), CDDP_PROF_MS(t3, t4),
               CDDP_PROF_MS(t4, t5), (long long)M, (long long)total[B]);
#endif
}

// ---------------------------------------------------------------------------------------------
// Random-k.
namespace {

// Appends (~priority, index) for the elements of [i, e) whose priority is < t64 to sk/si at p
// (scalar; any alignment).
template <class Index>
int64_t philox_scalar(const philox::Key& key, int64_t step, int64_t param_index, int64_t i,
                      int64_t e, uint64_t t64, uint32_t* sk, Index* si, int64_t p) {
  while (i < e) {
    const philox::Block r = philox::philox4x32_10(
        philox::randomk_counter(static_cast<uint64_t>(i >> 2), step, param_index), key);
    const int64_t block_end = std::min(e, (i | 3) + 1);
    for (; i < block_end; ++i) {
      const uint32_t pr = r.c[i & 3];
      sk[p] = ~pr;
      si[p] = static_cast<Index>(i);
      p += static_cast<uint64_t>(pr) < t64 ? 1 : 0;
    }
  }
  return p;
}

#if defined(CDDP_RADIX_AVX2)
// Philox4x32-10 on eight consecutive blocks at once (blocks b..b+7, b % 8 == 0, no carry into
// the counter's high word), then the 32 priorities in element order, the kept ones left-packed.
template <class Index>
__attribute__((target("avx2,popcnt"))) int64_t philox_avx2(const philox::Key& key, int64_t step,
                                                            int64_t param_index, int64_t i,
                                                            int64_t e, uint64_t t64, uint32_t* sk,
                                                            Index* si, int64_t p) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  const __m256i m0 = _mm256_set1_epi64x(M0), m1 = _mm256_set1_epi64x(M1);
  __m256i rk0[10], rk1[10];
  for (int r = 0; r < 10; ++r) {
    rk0[r] = _mm256_set1_epi32(static_cast<int32_t>(key.k0 + static_cast<uint32_t>(r) * W0));
    rk1[r] = _mm256_set1_epi32(static_cast<int32_t>(key.k1 + static_cast<uint32_t>(r) * W1));
  }
  const __m256i c2 = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(step)));
  const __m256i c3 = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(param_index)));
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i flip = _mm256_set1_epi32(static_cast<int32_t>(0x80000000u));
  const bool all = t64 > 0xffffffffull;
  const __m256i tv = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(t64) ^ 0x80000000u));
  const __m256i ones = _mm256_set1_epi32(-1);
  // mulhilo of eight 32-bit lanes by a constant (held in the low half of each 64-bit lane).
  auto mulhilo = [](__m256i a, __m256i m, __m256i& hi, __m256i& lo)
      __attribute__((target("avx2"))) {
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  };
  for (; i + 32 <= e; i += 32) {
    const uint64_t b = static_cast<uint64_t>(i) >> 2;
    if (static_cast<uint32_t>(b) > 0xfffffff8u) {  // the low counter word would wrap
      p = philox_scalar<Index>(key, step, param_index, i, i + 32, t64, sk, si, p);
      continue;
    }
    __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(b))), iota);
    __m256i x1 = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(b >> 32)));
    __m256i x2 = c2, x3 = c3;
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, lo0, hi1, lo1;
      mulhilo(x0, m0, hi0, lo0);
      mulhilo(x2, m1, hi1, lo1);
      x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), rk0[r]);
      x1 = lo1;
      x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), rk1[r]);
      x3 = lo0;
    }
    // Lane j of x_l is lane l of block b + j; element order is block-major.
    const __m256i t0 = _mm256_unpacklo_epi32(x0, x1), t1 = _mm256_unpackhi_epi32(x0, x1);
    const __m256i t2 = _mm256_unpacklo_epi32(x2, x3), t3 = _mm256_unpackhi_epi32(x2, x3);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i pv[4] = {_mm256_permute2x128_si256(u0, u1, 0x20),
                           _mm256_permute2x128_si256(u2, u3, 0x20),
                           _mm256_permute2x128_si256(u0, u1, 0x31),
                           _mm256_permute2x128_si256(u2, u3, 0x31)};
    __m256i sel[4];
    for (int q = 0; q < 4; ++q) {  // priority < t, unsigned
      sel[q] = all ? ones : _mm256_cmpgt_epi32(tv, _mm256_xor_si256(pv[q], flip));
    }
    const __m256i any = _mm256_or_si256(_mm256_or_si256(sel[0], sel[1]),
                                        _mm256_or_si256(sel[2], sel[3]));
    if (_mm256_testz_si256(any, any)) continue;
    for (int q = 0; q < 4; ++q) {
      const int m = _mm256_movemask_ps(_mm256_castsi256_ps(sel[q]));
      const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack.lane[m]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sk + p),
                          _mm256_permutevar8x32_epi32(_mm256_xor_si256(pv[q], ones), perm));
      const int64_t at = i + 8 * q;
      if constexpr (std::is_same_v<Index, int32_t>) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(si + p),
                            _mm256_add_epi32(perm, _mm256_set1_epi32(static_cast<int32_t>(at))));
      } else {
        const __m256i base = _mm256_set1_epi64x(at);
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(si + p),
            _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(perm)), base));
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(si + p + 4),
            _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(perm, 1)), base));
      }
      p += _mm_popcnt_u32(static_cast<unsigned>(m));
    }
  }
  return philox_scalar<Index>(key, step, param_index, i, e, t64, sk, si, p);
}
#endif

// One chunk of random-k's single pass: the (~priority, index) of the elements of [lo, hi)
// with priority < t64, in index order, appended to kb/ib (grown as needed). Returns the count.
template <class Index>
int64_t philox_collect(uint64_t seed, int64_t step, int64_t param_index, int64_t lo, int64_t hi,
                       uint64_t t64, RawBuf& kb, RawBuf& ib) {
  const philox::Key key = philox::randomk_key(seed);
  alignas(64) uint32_t sk[kStage + 8];
  alignas(64) Index si[kStage + 8];
  int64_t count = 0;
  int64_t i = lo;
  while (i < hi) {
    // Blocks of kStage elements, aligned to multiples of 32 after the first.
    const int64_t e = std::min(hi, (i / kStage + 1) * kStage);
    int64_t p = 0;
#if defined(CDDP_RADIX_AVX2)
    if (cpu_has_avx2()) {
      const int64_t a = std::min(e, (i + 31) / 32 * 32);
      p = philox_scalar<Index>(key, step, param_index, i, a, t64, sk, si, p);
      p = philox_avx2<Index>(key, step, param_index, a, e, t64, sk, si, p);
    } else {
      p = philox_scalar<Index>(key, step, param_index, i, e, t64, sk, si, p);
    }
#else
    p = philox_scalar<Index>(key, step, param_index, i, e, t64, sk, si, p);
#endif
    i = e;
    if (p == 0) continue;  // nothing kept: the buffers may still be empty (null), and memcpy(null, …, 0) is UB
    uint32_t* dk = kb.grow_keep<uint32_t>(static_cast<std::size_t>(count + p));
    Index* dx = ib.grow_keep<Index>(static_cast<std::size_t>(count + p));
    std::memcpy(dk + count, sk, sizeof(uint32_t) * static_cast<std::size_t>(p));
    std::memcpy(dx + count, si, sizeof(Index) * static_cast<std::size_t>(p));
    count += p;
  }
  return count;
}

}  // namespace

template <class Index>
void RadixTopK::Impl::randomk(uint64_t seed, int64_t step, int64_t param_index, int64_t n,
                              int64_t k, Index* out_i) {
  check_sizes<Index>(n, k, "RadixTopK::select_smallest_philox");
  if (k == 0) return;
  if (out_i == nullptr) throw std::invalid_argument("RadixTopK::select_smallest_philox: null");
  if (k == n) {
    for (int64_t i = 0; i < n; ++i) out_i[i] = static_cast<Index>(i);
    return;
  }
  const int64_t nchunks = plan_chunks(n);
  if (static_cast<int64_t>(chunk_k.size()) < nchunks) {
    chunk_k.resize(static_cast<std::size_t>(nchunks));
    chunk_i.resize(static_cast<std::size_t>(nchunks));
  }
  // Priorities are uniform on [0, 2^32): keep those below t, where the expected count is
  // k + 8 sqrt(k) + 64. Fewer than k kept (~1e-15): keep everything instead.
  const double target = static_cast<double>(k) + 8.0 * std::sqrt(static_cast<double>(k)) + 64.0;
  const double tf = std::ceil(target / static_cast<double>(n) * 4294967296.0);
  uint64_t t64 = tf >= 4294967296.0 ? (uint64_t{1} << 32) : static_cast<uint64_t>(tf);
  std::vector<int64_t> cnt(static_cast<std::size_t>(nchunks), 0);
  int64_t total = 0;
  for (;;) {
    run_chunks(nchunks, [&](int64_t c) {
      const int64_t lo = chunk_begin(n, nchunks, c), hi = chunk_begin(n, nchunks, c + 1);
      cnt[c] = philox_collect<Index>(seed, step, param_index, lo, hi, t64, chunk_k[c],
                                     chunk_i[c]);
    });
    total = 0;
    for (int64_t c = 0; c < nchunks; ++c) total += cnt[c];
    if (total >= k || t64 == (uint64_t{1} << 32)) break;
    t64 = uint64_t{1} << 32;
  }
  // Candidates, contiguous and in index order (keys are ~priority: larger is better).
  uint32_t* ck;
  Index* ci;
  if (nchunks == 1) {
    ck = chunk_k[0].data<uint32_t>();
    ci = chunk_i[0].data<Index>();
  } else {
    ck = cand_k.get<uint32_t>(static_cast<std::size_t>(total));
    ci = cand_i.get<Index>(static_cast<std::size_t>(total));
    int64_t o = 0;
    for (int64_t c = 0; c < nchunks; ++c) {
      if (cnt[c] == 0) continue;
      std::memcpy(ck + o, chunk_k[c].data<uint32_t>(), sizeof(uint32_t) * cnt[c]);
      std::memcpy(ci + o, chunk_i[c].data<Index>(), sizeof(Index) * cnt[c]);
      o += cnt[c];
    }
  }
  const Threshold t =
      resolve<uint32_t, Index>(ck, ci, total, k, 0xffffffffu, 32, 0, scratch_k, scratch_i);
  const uint32_t T_ = static_cast<uint32_t>(t.key);
  const int64_t I_ = t.last_index;
  int64_t o = 0;
  for (int64_t j = 0; j < total; ++j) {
    out_i[o] = ci[j];
    o += (ck[j] > T_ || (ck[j] == T_ && static_cast<int64_t>(ci[j]) <= I_)) ? 1 : 0;
    if (o == k) break;
  }
}

// ---------------------------------------------------------------------------------------------
RadixTopK::RadixTopK() : impl_(std::make_unique<Impl>()) {}
RadixTopK::~RadixTopK() = default;
RadixTopK::RadixTopK(RadixTopK&&) noexcept = default;
RadixTopK& RadixTopK::operator=(RadixTopK&&) noexcept = default;

void RadixTopK::select_float(const float* x, float* residual, int64_t n, int64_t k,
                             float* out_values, int32_t* out_indices) {
  impl_->topk<float, int32_t>(x, residual, n, k, out_values, out_indices);
}
void RadixTopK::select_float(const float* x, float* residual, int64_t n, int64_t k,
                             float* out_values, int64_t* out_indices) {
  impl_->topk<float, int64_t>(x, residual, n, k, out_values, out_indices);
}
void RadixTopK::select_float_momentum(float* velocity, const float* g, float momentum, float* residual, int64_t n,
                                      int64_t k, float* out_values, int32_t* out_indices) {
  const MomentumIn<float> mom{velocity, g, momentum};
  impl_->topk<float, int32_t>(nullptr, residual, n, k, out_values, out_indices, &mom);
}
void RadixTopK::select_float_momentum(float* velocity, const float* g, float momentum, float* residual, int64_t n,
                                      int64_t k, float* out_values, int64_t* out_indices) {
  const MomentumIn<float> mom{velocity, g, momentum};
  impl_->topk<float, int64_t>(nullptr, residual, n, k, out_values, out_indices, &mom);
}
void RadixTopK::select_double(const double* x, double* residual, int64_t n, int64_t k,
                              double* out_values, int32_t* out_indices) {
  impl_->topk<double, int32_t>(x, residual, n, k, out_values, out_indices);
}
void RadixTopK::select_double(const double* x, double* residual, int64_t n, int64_t k,
                              double* out_values, int64_t* out_indices) {
  impl_->topk<double, int64_t>(x, residual, n, k, out_values, out_indices);
}
void RadixTopK::select_smallest_philox(uint64_t seed, int64_t step, int64_t param_index,
                                       int64_t n, int64_t k, int32_t* out_indices) {
  impl_->randomk<int32_t>(seed, step, param_index, n, k, out_indices);
}
void RadixTopK::select_smallest_philox(uint64_t seed, int64_t step, int64_t param_index,
                                       int64_t n, int64_t k, int64_t* out_indices) {
  impl_->randomk<int64_t>(seed, step, param_index, n, k, out_indices);
}
std::size_t RadixTopK::workspace_bytes() const noexcept { return impl_ ? impl_->bytes() : 0; }
void RadixTopK::release() noexcept {
  if (impl_) impl_->release();
}

namespace detail {
bool set_avx2_allowed(bool allowed) noexcept {
#if defined(CDDP_RADIX_AVX2)
  return g_avx2_allowed.exchange(allowed);
#else
  (void)allowed;
  return false;
#endif
}
bool avx2_in_use() noexcept {
#if defined(CDDP_RADIX_AVX2)
  return cpu_has_avx2();
#else
  return false;
#endif
}
}  // namespace detail

uint32_t philox_priority(uint64_t seed, int64_t step, int64_t param_index, int64_t i) {
  const philox::Block r = philox::philox4x32_10(
      philox::randomk_counter(static_cast<uint64_t>(i >> 2), step, param_index),
      philox::randomk_key(seed));
  return r.c[i & 3];
}

}  // namespace cddp::kernels
