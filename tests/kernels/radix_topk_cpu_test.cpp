// radix_topk_cpu_test.cpp — cddp::kernels::RadixTopK against simple stable-sort references:
// exact top-k of |x| (ties: lower index), fused error feedback and DGC momentum prologue, NaN
// errors, thread invariance, and the seeded random-k selection.
#include "philox.h"
#include "radix_topk_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using cddp::kernels::RadixTopK;

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}
uint64_t bits_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}
float float_of(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}
uint64_t mag(float v) { return bits_of(v) & 0x7fffffffu; }
uint64_t mag(double v) { return bits_of(v) & 0x7fffffffffffffffull; }

// The reference: stable sort by magnitude bits, descending (stable: lower index first among
// equal keys), first k, sorted by index.
template <class T>
std::vector<int64_t> reference_topk(const std::vector<T>& a, int64_t k) {
  std::vector<int64_t> idx(a.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t i, int64_t j) { return mag(a[i]) > mag(a[j]); });
  idx.resize(static_cast<std::size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Sets the ATen thread count for a scope.
class Threads {
 public:
  explicit Threads(int n) : old_(at::get_num_threads()) { at::set_num_threads(n); }
  ~Threads() { at::set_num_threads(old_); }

 private:
  int old_;
};

// The thread count for the trials of a loop: the first third on two threads, the rest on one.
// (at::set_num_threads also rebuilds LibTorch's other thread pool, so it is not called per
// trial.)
class ThreadPhases {
 public:
  ThreadPhases() : old_(at::get_num_threads()) {}
  ~ThreadPhases() { at::set_num_threads(old_); }
  void at_trial(int trial, int trials) {
    const int want = trial < trials / 3 ? 2 : 1;
    if (want != current_) {
      at::set_num_threads(want);
      current_ = want;
    }
  }

 private:
  int old_;
  int current_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Inputs.
enum class Gen {
  kNormal, kUniform, kTies, kQuantized, kSpecial, kNegative, kAllEqual, kAllZero, kClustered,
  kWide, kSparse, kCount
};
const char* gen_name(Gen g) {
  static const char* names[] = {"normal", "uniform", "ties", "quantized", "special", "negative",
                                "all-equal", "all-zero", "clustered", "wide", "sparse"};
  return names[static_cast<int>(g)];
}

template <class T>
std::vector<T> make_input(Gen g, int64_t n, std::mt19937_64& rng) {
  std::vector<T> x(static_cast<std::size_t>(n));
  std::normal_distribution<double> nd(0.0, 1.0);
  std::uniform_real_distribution<double> ud(-1.0, 1.0);
  std::uniform_int_distribution<int> coin(0, 1);
  const T inf = std::numeric_limits<T>::infinity();
  const T den = std::numeric_limits<T>::denorm_min();
  switch (g) {
    case Gen::kNormal:
      for (auto& v : x) v = static_cast<T>(nd(rng));
      break;
    case Gen::kUniform:
      for (auto& v : x) v = static_cast<T>(ud(rng));
      break;
    case Gen::kTies: {  // a handful of magnitudes, both signs
      std::uniform_int_distribution<int> pick(0, 5);
      const T vals[] = {T(0.5), T(1), T(2), T(-1), T(-2), T(0)};
      for (auto& v : x) v = vals[pick(rng)];
      break;
    }
    case Gen::kQuantized:
      for (auto& v : x) v = static_cast<T>(std::round(nd(rng) * 4.0) / 4.0);
      break;
    case Gen::kSpecial: {  // ±0, denormals, ±inf, extremes and ordinary values
      std::uniform_int_distribution<int> pick(0, 11);
      for (auto& v : x) {
        switch (pick(rng)) {
          case 0: v = T(0); break;
          case 1: v = -T(0); break;
          case 2: v = den; break;
          case 3: v = -den * T(3); break;
          case 4: v = std::numeric_limits<T>::min() / T(2); break;  // denormal
          case 5: v = inf; break;
          case 6: v = -inf; break;
          case 7: v = std::numeric_limits<T>::max(); break;
          case 8: v = -std::numeric_limits<T>::max(); break;
          case 9: v = std::numeric_limits<T>::min(); break;
          default: v = static_cast<T>(nd(rng)); break;
        }
      }
      break;
    }
    case Gen::kNegative:
      for (auto& v : x) v = -static_cast<T>(std::fabs(nd(rng))) - den;
      break;
    case Gen::kAllEqual: {
      const T c = static_cast<T>(nd(rng));
      for (auto& v : x) v = coin(rng) ? c : -c;
      break;
    }
    case Gen::kAllZero:
      for (auto& v : x) v = coin(rng) ? T(0) : -T(0);
      break;
    case Gen::kClustered: {  // 1.0 plus a few ulps: everything in one top-level bucket
      std::uniform_int_distribution<int> ulps(0, 300);
      for (auto& v : x) {
        T y = T(1);
        const int u = ulps(rng);
        for (int j = 0; j < u % 7; ++j) y = std::nextafter(y, T(2));
        y = static_cast<T>(y + static_cast<T>(u / 7) * std::numeric_limits<T>::epsilon() * 8);
        v = coin(rng) ? y : -y;
      }
      break;
    }
    case Gen::kWide: {  // magnitudes over the whole exponent range
      const int emax = std::numeric_limits<T>::max_exponent;
      const int emin = std::numeric_limits<T>::min_exponent - std::numeric_limits<T>::digits;
      std::uniform_int_distribution<int> ex(emin, emax - 1);
      for (auto& v : x) {
        v = static_cast<T>(std::ldexp(static_cast<T>(0.5 + 0.5 * std::fabs(ud(rng))), ex(rng)));
        if (coin(rng)) v = -v;
      }
      break;
    }
    case Gen::kSparse: {  // mostly zeros, a few values
      std::uniform_int_distribution<int> pick(0, 99);
      for (auto& v : x) v = pick(rng) < 3 ? static_cast<T>(nd(rng)) : T(0);
      break;
    }
    case Gen::kCount:
      break;
  }
  return x;
}

template <class T, class Index>
void run_select(RadixTopK& s, const std::vector<T>& x, T* residual, int64_t k,
                std::vector<T>& vals, std::vector<Index>& idx) {
  vals.assign(static_cast<std::size_t>(k), T(-12345));
  idx.assign(static_cast<std::size_t>(k), Index(-1));
  const int64_t n = static_cast<int64_t>(x.size());
  if constexpr (std::is_same_v<T, float>) {
    s.select_float(x.data(), residual, n, k, vals.data(), idx.data());
  } else {
    s.select_double(x.data(), residual, n, k, vals.data(), idx.data());
  }
}

// Exactness of one plain selection against the reference.
template <class T, class Index>
::testing::AssertionResult check_plain(RadixTopK& s, const std::vector<T>& x, int64_t k) {
  std::vector<T> vals;
  std::vector<Index> idx;
  run_select<T, Index>(s, x, nullptr, k, vals, idx);
  const std::vector<int64_t> ref = reference_topk(x, k);
  for (int64_t j = 0; j < k; ++j) {
    if (static_cast<int64_t>(idx[j]) != ref[j]) {
      return ::testing::AssertionFailure() << "index mismatch at output " << j << ": got "
                                           << static_cast<int64_t>(idx[j]) << " want " << ref[j];
    }
    if (bits_of(vals[j]) != bits_of(x[ref[j]])) {
      return ::testing::AssertionFailure() << "value bits mismatch at output " << j;
    }
  }
  return ::testing::AssertionSuccess();
}

int64_t pick_k(int64_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> mode(0, 7);
  switch (mode(rng)) {
    case 0: return 1;
    case 1: return n;
    case 2: return std::max<int64_t>(1, n - 1);
    case 3: return std::max<int64_t>(1, n / 1000);
    case 4: return std::max<int64_t>(1, n / 100);
    case 5: return std::max<int64_t>(1, n / 10);
    default: return std::uniform_int_distribution<int64_t>(1, n)(rng);
  }
}

int64_t pick_n(std::mt19937_64& rng) {
  static const int64_t special[] = {1,     2,     3,     5,      7,      13,     15,     16,
                                    17,    31,    127,   1021,   1023,   1024,   1025,   4093,
                                    65521, 65537, 99991, 131071, 131073, 262147, 524287, 999983};
  std::uniform_int_distribution<int> mode(0, 99);
  const int m = mode(rng);
  if (m < 15) {
    return special[std::uniform_int_distribution<int>(0, std::size(special) - 1)(rng)];
  }
  if (m < 70) return std::uniform_int_distribution<int64_t>(1, 300)(rng);
  if (m < 95) return std::uniform_int_distribution<int64_t>(1, 20000)(rng);
  return std::uniform_int_distribution<int64_t>(20000, 300000)(rng);
}

// Switches the AVX2 kernels off for a scope (the portable SSE2/scalar paths run instead).
class PortableOnly {
 public:
  PortableOnly() : old_(cddp::kernels::detail::set_avx2_allowed(false)) {}
  ~PortableOnly() { cddp::kernels::detail::set_avx2_allowed(old_); }

 private:
  bool old_;
};

// ---------------------------------------------------------------------------------------------
void random_float_cases(int trials, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RadixTopK s;  // one workspace for all: it grows and shrinks in use
  ThreadPhases phases;
  for (int trial = 0; trial < trials; ++trial) {
    const int64_t n = pick_n(rng);
    const Gen g = static_cast<Gen>(trial % static_cast<int>(Gen::kCount));
    const std::vector<float> x = make_input<float>(g, n, rng);
    const int64_t k = pick_k(n, rng);
    phases.at_trial(trial, trials);
    SCOPED_TRACE(std::string("gen=") + gen_name(g) + " n=" + std::to_string(n) +
                 " k=" + std::to_string(k) + " trial=" + std::to_string(trial));
    if (trial % 2 == 0) {
      ASSERT_TRUE((check_plain<float, int32_t>(s, x, k)));
    } else {
      ASSERT_TRUE((check_plain<float, int64_t>(s, x, k)));
    }
  }
}

TEST(RadixTopK, RandomCasesFloatMatchReference) { random_float_cases(2500, 20240601); }

TEST(RadixTopK, LargeFloatCasesMatchReference) {
  std::mt19937_64 rng(7);
  RadixTopK s;
  const int64_t n = 999983;  // prime, two chunks with two threads
  for (Gen g : {Gen::kNormal, Gen::kQuantized, Gen::kClustered, Gen::kSpecial}) {
    const std::vector<float> x = make_input<float>(g, n, rng);
    for (int64_t k : {int64_t{1}, n / 1000, n / 100, n / 10, n / 2}) {
      Threads th(2);
      SCOPED_TRACE(std::string("gen=") + gen_name(g) + " k=" + std::to_string(k));
      ASSERT_TRUE((check_plain<float, int64_t>(s, x, k)));
    }
  }
}

TEST(RadixTopK, EdgeCases) {
  RadixTopK s;
  std::vector<float> vals;
  std::vector<int32_t> idx;
  // n == 1, k == 1 (and -0).
  for (float v : {0.0f, -0.0f, 3.0f, -std::numeric_limits<float>::infinity(), 1e-45f}) {
    std::vector<float> x{v};
    run_select<float, int32_t>(s, x, nullptr, 1, vals, idx);
    EXPECT_EQ(idx[0], 0);
    EXPECT_EQ(bits_of(vals[0]), bits_of(v));
  }
  // k == 0: nothing written.
  {
    std::vector<float> x{1.f, 2.f};
    vals.assign(1, 7.f);
    idx.assign(1, 7);
    s.select_float(x.data(), nullptr, 2, 0, vals.data(), idx.data());
    EXPECT_EQ(vals[0], 7.f);
    EXPECT_EQ(idx[0], 7);
  }
  // ±0 tie: the lower index wins, the sign is kept.
  {
    std::vector<float> x{-0.0f, 0.0f, -0.0f};
    run_select<float, int32_t>(s, x, nullptr, 2, vals, idx);
    EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(bits_of(vals[0]), 0x80000000u);
    EXPECT_EQ(bits_of(vals[1]), 0u);
  }
  // inf beats max, -inf ties with inf, denormal beats zero.
  {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> x{1.f, -inf, std::numeric_limits<float>::max(), inf, 0.f, 1e-45f};
    run_select<float, int32_t>(s, x, nullptr, 1, vals, idx);
    EXPECT_EQ(idx, (std::vector<int32_t>{1}));
    run_select<float, int32_t>(s, x, nullptr, 2, vals, idx);
    EXPECT_EQ(idx, (std::vector<int32_t>{1, 3}));
    run_select<float, int32_t>(s, x, nullptr, 5, vals, idx);
    EXPECT_EQ(idx, (std::vector<int32_t>{0, 1, 2, 3, 5}));
  }
  // Ties at the boundary: first by index.
  {
    std::vector<float> x{1.f, 2.f, -2.f, 2.f, 0.5f, -2.f, 3.f};
    run_select<float, int32_t>(s, x, nullptr, 3, vals, idx);
    EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 6}));
    EXPECT_EQ(vals, (std::vector<float>{2.f, -2.f, 3.f}));
  }
  // Bad sizes.
  {
    std::vector<float> x{1.f, 2.f};
    EXPECT_THROW(s.select_float(x.data(), nullptr, 2, 3, vals.data(), idx.data()),
                 std::invalid_argument);
    EXPECT_THROW(s.select_float(x.data(), nullptr, 2, -1, vals.data(), idx.data()),
                 std::invalid_argument);
    EXPECT_THROW(
        s.select_float(x.data(), nullptr, (int64_t{1} << 31) + 1, 1, vals.data(), idx.data()),
        std::invalid_argument);  // int32 indices cannot hold it; checked before any read
  }
  // n == 0.
  s.select_float(nullptr, nullptr, 0, 0, nullptr, static_cast<int32_t*>(nullptr));
}

// The selected magnitudes are the same multiset as torch's topk of |x|.
TEST(RadixTopK, SameMagnitudesAsTorchTopk) {
  std::mt19937_64 rng(11);
  RadixTopK s;
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 200000)(rng);
    const Gen g = static_cast<Gen>(trial % static_cast<int>(Gen::kCount));
    std::vector<float> x = make_input<float>(g, n, rng);
    const int64_t k = pick_k(n, rng);
    std::vector<float> vals;
    std::vector<int64_t> idx;
    run_select<float, int64_t>(s, x, nullptr, k, vals, idx);
    at::Tensor t = at::from_blob(x.data(), {n}, at::kFloat);
    at::Tensor ref = std::get<0>(at::topk(t.abs(), k, 0, true, true)).contiguous();
    std::vector<float> got(static_cast<std::size_t>(k));
    for (int64_t j = 0; j < k; ++j) got[j] = std::fabs(vals[j]);
    std::sort(got.begin(), got.end(), std::greater<float>());
    const float* r = ref.data_ptr<float>();
    for (int64_t j = 0; j < k; ++j) {
      ASSERT_EQ(got[j], r[j]) << gen_name(g) << " n=" << n << " k=" << k << " j=" << j;
    }
  }
}

// Bitwise identical output for 1, 2 and 3 threads.
void thread_invariance(int64_t n, std::initializer_list<Gen> gens) {
  std::mt19937_64 rng(3);
  for (Gen g : gens) {
    const std::vector<float> x = make_input<float>(g, n, rng);
    const std::vector<float> r0 = make_input<float>(Gen::kNormal, n, rng);
    for (int64_t k : {n / 1000, n / 100, n / 10, n / 2}) {
      std::vector<float> v1, vt, res1, rest;
      std::vector<int64_t> i1, it;
      RadixTopK s;
      {
        Threads th(1);
        run_select<float, int64_t>(s, x, nullptr, k, v1, i1);
      }
      for (int t : {2, 3}) {
        Threads th(t);
        run_select<float, int64_t>(s, x, nullptr, k, vt, it);
        ASSERT_EQ(i1, it) << gen_name(g) << " k=" << k << " threads=" << t;
        ASSERT_EQ(0, std::memcmp(v1.data(), vt.data(), sizeof(float) * k));
      }
      // Fused, too.
      res1 = r0;
      {
        Threads th(1);
        run_select<float, int64_t>(s, x, res1.data(), k, v1, i1);
      }
      rest = r0;
      {
        Threads th(2);
        run_select<float, int64_t>(s, x, rest.data(), k, vt, it);
      }
      ASSERT_EQ(i1, it);
      ASSERT_EQ(0, std::memcmp(v1.data(), vt.data(), sizeof(float) * k));
      ASSERT_EQ(0, std::memcmp(res1.data(), rest.data(), sizeof(float) * n));
    }
  }
}

TEST(RadixTopK, ThreadInvariance) {
  thread_invariance(1000003,
                    {Gen::kNormal, Gen::kTies, Gen::kAllEqual, Gen::kClustered, Gen::kSparse});
}

// Fused error feedback: selection over acc = x + residual; residual = acc, selected set to +0.
template <class T, class Index>
::testing::AssertionResult check_fused(RadixTopK& s, const std::vector<T>& x,
                                       const std::vector<T>& r_before, int64_t k) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<T> acc(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) acc[i] = x[i] + r_before[i];
  std::vector<T> r = r_before;
  std::vector<T> vals;
  std::vector<Index> idx;
  run_select<T, Index>(s, x, r.data(), k, vals, idx);
  const std::vector<int64_t> ref = reference_topk(acc, k);
  std::vector<char> selected(static_cast<std::size_t>(n), 0);
  for (int64_t j = 0; j < k; ++j) {
    if (static_cast<int64_t>(idx[j]) != ref[j]) {
      return ::testing::AssertionFailure() << "index mismatch at " << j;
    }
    if (bits_of(vals[j]) != bits_of(acc[ref[j]])) {
      return ::testing::AssertionFailure() << "value is not acc at " << j;
    }
    selected[ref[j]] = 1;
  }
  std::vector<T> dense = r;  // residual_after + scatter(values)
  for (int64_t j = 0; j < k; ++j) dense[idx[j]] += vals[j];
  for (int64_t i = 0; i < n; ++i) {
    if (selected[i] ? bits_of(r[i]) != 0 : bits_of(r[i]) != bits_of(acc[i])) {
      return ::testing::AssertionFailure() << "residual wrong at " << i;
    }
    if (!(dense[i] == acc[i])) {
      return ::testing::AssertionFailure() << "residual + values != x + residual at " << i;
    }
  }
  return ::testing::AssertionSuccess();
}

void fused_cases(int trials, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RadixTopK s;
  ThreadPhases phases;
  for (int trial = 0; trial < trials; ++trial) {
    const int64_t n = pick_n(rng);
    const Gen g = static_cast<Gen>(trial % static_cast<int>(Gen::kCount));
    const std::vector<float> x = make_input<float>(g, n, rng);
    std::vector<float> r = make_input<float>(static_cast<Gen>((trial / 11) % 4), n, rng);
    if (trial % 5 == 0) {  // exact cancellations: acc == +0
      for (int64_t i = 0; i < n; i += 3) r[i] = -x[i];
    }
    if (g == Gen::kSpecial) {  // inf + -inf would be NaN: that is the NaN test's business
      for (int64_t i = 0; i < n; ++i) {
        if (std::isinf(x[i])) r[i] = 0.f;
      }
    }
    const int64_t k = pick_k(n, rng);
    phases.at_trial(trial, trials);
    SCOPED_TRACE(std::string("gen=") + gen_name(g) + " n=" + std::to_string(n) +
                 " k=" + std::to_string(k));
    if (trial % 2 == 0) {
      ASSERT_TRUE((check_fused<float, int32_t>(s, x, r, k)));
    } else {
      ASSERT_TRUE((check_fused<float, int64_t>(s, x, r, k)));
    }
  }
}

TEST(RadixTopK, FusedErrorFeedback) { fused_cases(500, 5); }

// DGC's momentum prologue (select_float_momentum) against its contract: ATen's
// u.mul_(m).add_(g), then the fused selection of select_float: the same u, residual, values
// and indices, bit for bit.
template <class Index>
::testing::AssertionResult check_momentum(RadixTopK& s, const std::vector<float>& g, const std::vector<float>& u0,
                                          const std::vector<float>& r0, float m, int64_t k) {
  const int64_t n = static_cast<int64_t>(g.size());
  std::vector<float> gv = g, u_ref = u0, r_ref = r0, u = u0, r = r0;
  at::Tensor ut = at::from_blob(u_ref.data(), {n});
  ut.mul_(double(m)).add_(at::from_blob(gv.data(), {n}));  // the chain the host runs unfused
  std::vector<float> v_ref, v(static_cast<std::size_t>(k), -1.f);
  std::vector<Index> i_ref, i(static_cast<std::size_t>(k), Index(-1));
  run_select<float, Index>(s, u_ref, r_ref.data(), k, v_ref, i_ref);
  s.select_float_momentum(u.data(), g.data(), m, r.data(), n, k, v.data(), i.data());
  for (int64_t j = 0; j < n; ++j) {
    if (bits_of(u[j]) != bits_of(u_ref[j])) return ::testing::AssertionFailure() << "velocity differs at " << j;
    if (bits_of(r[j]) != bits_of(r_ref[j])) return ::testing::AssertionFailure() << "residual differs at " << j;
  }
  for (int64_t j = 0; j < k; ++j) {
    if (i[j] != i_ref[j] || bits_of(v[j]) != bits_of(v_ref[j]))
      return ::testing::AssertionFailure() << "output " << j << " differs";
  }
  return ::testing::AssertionSuccess();
}

void momentum_cases(int trials, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RadixTopK s;
  const float factors[] = {0.9f, 0.5f, 0.f, 0.99f, 1.f};
  for (int trial = 0; trial < trials; ++trial) {
    const int64_t n = pick_n(rng);
    Gen gen = static_cast<Gen>(trial % static_cast<int>(Gen::kCount));
    if (gen == Gen::kSpecial) gen = Gen::kWide;  // inf − inf would be NaN: NaNIsAnError's business
    const std::vector<float> g = make_input<float>(gen, n, rng);
    const std::vector<float> u = make_input<float>(static_cast<Gen>((trial / 3) % 4), n, rng);
    const std::vector<float> r = make_input<float>(static_cast<Gen>((trial / 7) % 4), n, rng);
    const float m = factors[trial % 5];
    const int64_t k = pick_k(n, rng);
    SCOPED_TRACE(std::string("gen=") + gen_name(gen) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                 " m=" + std::to_string(m));
    if (trial % 2 == 0) {
      ASSERT_TRUE(check_momentum<int32_t>(s, g, u, r, m, k));
    } else {
      ASSERT_TRUE(check_momentum<int64_t>(s, g, u, r, m, k));
    }
  }
}

TEST(RadixTopK, MomentumPrologueGivesTheChainsBits) { momentum_cases(300, 41); }

TEST(RadixTopK, MomentumPrologueEdgeCases) {
  RadixTopK s;
  std::mt19937_64 rng(43);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{65537}}) {
    const std::vector<float> g = make_input<float>(Gen::kNormal, n, rng), u = make_input<float>(Gen::kNormal, n, rng),
                             r = make_input<float>(Gen::kUniform, n, rng);
    for (int64_t k : {int64_t{0}, int64_t{1}, n}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k));
      ASSERT_TRUE(check_momentum<int32_t>(s, g, u, r, 0.9f, k));
    }
  }
  // A NaN in g: an error naming NaN; velocity and residual then hold the updated values.
  std::vector<float> g(100, 1.f), u(100, 2.f), r(100, 0.5f), v(1);
  std::vector<int32_t> i(1);
  g[37] = std::numeric_limits<float>::quiet_NaN();
  try {
    s.select_float_momentum(u.data(), g.data(), 0.5f, r.data(), 100, 1, v.data(), i.data());
    ADD_FAILURE() << "no throw for a NaN gradient";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
  EXPECT_EQ(u[0], 2.f);   // 0.5·2 + 1
  EXPECT_EQ(r[0], 2.5f);  // u + 0.5
  EXPECT_THROW(s.select_float_momentum(nullptr, g.data(), 0.5f, r.data(), 100, 1, v.data(), i.data()),
               std::invalid_argument);
}

TEST(RadixTopK, NaNIsAnError) {
  RadixTopK s;
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  const float nans[] = {qnan, -qnan, float_of(0x7f800001u), float_of(0xffffffffu)};
  for (int t : {1, 2}) {
    Threads th(t);
    for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{300000}}) {
      for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
        for (float nan : nans) {
          std::vector<float> x(static_cast<std::size_t>(n), 1.f);
          x[pos] = nan;
          std::vector<float> vals(static_cast<std::size_t>(n));
          std::vector<int32_t> idx(static_cast<std::size_t>(n));
          for (int64_t k : {int64_t{0}, int64_t{1}, n}) {
            try {
              s.select_float(x.data(), nullptr, n, k, vals.data(), idx.data());
              ADD_FAILURE() << "no throw, n=" << n << " pos=" << pos;
            } catch (const std::invalid_argument& e) {
              EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
            }
          }
        }
      }
      // acc = inf + -inf is NaN; the residual then holds acc.
      std::vector<float> x(static_cast<std::size_t>(n), 1.f), r(static_cast<std::size_t>(n), 2.f);
      x[n - 1] = std::numeric_limits<float>::infinity();
      r[n - 1] = -std::numeric_limits<float>::infinity();
      std::vector<float> vals(1);
      std::vector<int64_t> idx(1);
      try {
        s.select_float(x.data(), r.data(), n, 1, vals.data(), idx.data());
        ADD_FAILURE() << "no throw for NaN acc";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
      }
      for (int64_t i = 0; i + 1 < n; ++i) ASSERT_EQ(r[i], 3.f);
      // Double, too.
      std::vector<double> xd(static_cast<std::size_t>(n), 1.0);
      xd[n / 2] = std::numeric_limits<double>::quiet_NaN();
      std::vector<double> vd(1);
      EXPECT_THROW(s.select_double(xd.data(), nullptr, n, 1, vd.data(), idx.data()),
                   std::invalid_argument);
    }
  }
}

// ---------------------------------------------------------------------------------------------
TEST(RadixTopK, DoubleMatchesReference) {
  std::mt19937_64 rng(17);
  RadixTopK s;
  ThreadPhases phases;
  const int trials = 800;
  for (int trial = 0; trial < trials; ++trial) {
    const int64_t n = trial < 780 ? std::min<int64_t>(pick_n(rng), 40000)
                                  : std::uniform_int_distribution<int64_t>(100000, 400000)(rng);
    const Gen g = static_cast<Gen>(trial % static_cast<int>(Gen::kCount));
    const std::vector<double> x = make_input<double>(g, n, rng);
    const int64_t k = pick_k(n, rng);
    phases.at_trial(trial, trials);
    SCOPED_TRACE(std::string("gen=") + gen_name(g) + " n=" + std::to_string(n) +
                 " k=" + std::to_string(k));
    if (trial % 3 == 0) {
      std::vector<double> r = make_input<double>(Gen::kNormal, n, rng);
      if (g == Gen::kSpecial) {
        for (int64_t i = 0; i < n; ++i) {
          if (std::isinf(x[i])) r[i] = 0.0;
        }
      }
      ASSERT_TRUE((check_fused<double, int64_t>(s, x, r, k)));
    } else if (trial % 3 == 1) {
      ASSERT_TRUE((check_plain<double, int32_t>(s, x, k)));
    } else {
      ASSERT_TRUE((check_plain<double, int64_t>(s, x, k)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Random-k.
TEST(RadixTopK, PhiloxKnownAnswers) {
  // Random123's known-answer vectors for philox4x32_10.
  using namespace cddp::philox;
  Block a = philox4x32_10(Block{{0, 0, 0, 0}}, Key{0, 0});
  EXPECT_EQ(a.c[0], 0x6627e8d5u);
  EXPECT_EQ(a.c[1], 0xe169c58du);
  EXPECT_EQ(a.c[2], 0xbc57ac4cu);
  EXPECT_EQ(a.c[3], 0x9b00dbd8u);
  Block b = philox4x32_10(Block{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                          Key{0xffffffffu, 0xffffffffu});
  EXPECT_EQ(b.c[0], 0x408f276du);
  EXPECT_EQ(b.c[1], 0x41c83b0eu);
  EXPECT_EQ(b.c[2], 0xa20bc7c6u);
  EXPECT_EQ(b.c[3], 0x6d5451fdu);
  // philox_priority is lane i%4 of block i/4 with random-k's counter and key.
  const uint64_t seed = 0x0123456789abcdefull;
  for (int64_t i : {int64_t{0}, int64_t{5}, int64_t{1} << 33}) {
    Block r = philox4x32_10(randomk_counter(static_cast<uint64_t>(i / 4), 9, 4), randomk_key(seed));
    EXPECT_EQ(cddp::kernels::philox_priority(seed, 9, 4, i), r.c[i % 4]);
  }
}

std::vector<int64_t> reference_randomk(uint64_t seed, int64_t step, int64_t pidx, int64_t n,
                                       int64_t k) {
  std::vector<uint32_t> p(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = cddp::kernels::philox_priority(seed, step, pidx, i);
  std::vector<int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t i, int64_t j) { return p[i] < p[j]; });
  idx.resize(static_cast<std::size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

void randomk_cases(int trials, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RadixTopK s;
  ThreadPhases phases;
  for (int trial = 0; trial < trials; ++trial) {
    const int64_t n = std::min<int64_t>(pick_n(rng), 200000);
    const int64_t k = pick_k(n, rng);
    const uint64_t seed = rng();
    const int64_t step = trial, pidx = trial % 7 - 1;
    phases.at_trial(trial, trials);
    const std::vector<int64_t> ref = reference_randomk(seed, step, pidx, n, k);
    if (trial % 2 == 0) {
      std::vector<int32_t> got(static_cast<std::size_t>(k), -1);
      s.select_smallest_philox(seed, step, pidx, n, k, got.data());
      for (int64_t j = 0; j < k; ++j) ASSERT_EQ(got[j], ref[j]) << "n=" << n << " k=" << k;
    } else {
      std::vector<int64_t> got(static_cast<std::size_t>(k), -1);
      s.select_smallest_philox(seed, step, pidx, n, k, got.data());
      ASSERT_EQ(got, ref) << "n=" << n << " k=" << k;
    }
  }
}

TEST(RadixTopK, RandomKMatchesReference) { randomk_cases(400, 23); }

TEST(RadixTopK, RandomKThreadInvariance) {
  RadixTopK s;
  const int64_t n = 1000003;
  for (int64_t k : {int64_t{1}, n / 1000, n / 100, n / 2, n - 1}) {
    std::vector<int64_t> a(static_cast<std::size_t>(k)), b(static_cast<std::size_t>(k));
    {
      Threads th(1);
      s.select_smallest_philox(42, 7, 3, n, k, a.data());
    }
    {
      Threads th(2);
      s.select_smallest_philox(42, 7, 3, n, k, b.data());
    }
    ASSERT_EQ(a, b) << "k=" << k;
    if (k == n / 100) {
      ASSERT_EQ(a, reference_randomk(42, 7, 3, n, k));
    }
  }
}

// The same checks on the portable paths (meaningful where AVX2 is in use; harmless elsewhere).
TEST(RadixTopK, PortablePathsMatchReference) {
  const bool had_avx2 = cddp::kernels::detail::avx2_in_use();
  PortableOnly portable;
  EXPECT_FALSE(cddp::kernels::detail::avx2_in_use());
  random_float_cases(800, 99);
  fused_cases(200, 98);
  momentum_cases(100, 96);
  randomk_cases(100, 97);
  thread_invariance(400009, {Gen::kNormal, Gen::kClustered});
  if (!had_avx2) {
    GTEST_LOG_(INFO) << "no AVX2 here: the default paths are the portable ones";
  }
}

}  // namespace
