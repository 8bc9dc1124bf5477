// index_coding.cpp — IndexCoding's byte counts, and the Block16 encoder and decoder.
#include "index_coding.h"

#include <c10/util/Exception.h>

#include <algorithm>

namespace cddp {
namespace detail {

namespace {
constexpr int kBlockBits = 16;  // IndexCoding::Block16: 65,536 entries a block
int64_t blocks_of(int64_t numel) { return (numel + (int64_t{1} << kBlockBits) - 1) >> kBlockBits; }
}  // namespace

int64_t plain_index_bytes(int64_t count, int64_t numel) {
  return count * static_cast<int64_t>(c10::elementSize(index_dtype_for(numel)));
}
int64_t block16_bytes(int64_t count, int64_t numel) { return 4 * blocks_of(numel) + 2 * count; }
bool block16(IndexCoding coding, int64_t count, int64_t numel) {
  return coding == IndexCoding::Block16 && count > 0 && block16_bytes(count, numel) < plain_index_bytes(count, numel);
}

namespace {

// Block16 encoding of one selection into `dst` (4·blocks + 2·n bytes): the per-block counts,
// then the low 16 bits of each index, block after block. If the list is not already grouped by
// block (an unsorted compressor), it is regrouped by a stable counting sort and `order` receives
// the permutation (order[pos] = list position sent at pos), which the values must follow; for
// a grouped list (top-k and random-k emit sorted lists) `order` is left empty.
template <typename I>
void encode_impl(const I* idx, int64_t n, int64_t numel, uint8_t* dst, std::vector<int64_t>& order) {
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
void decode_impl(const uint8_t* src, int64_t n, int64_t numel, I* out, int from) {
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

}  // namespace

void encode_block16(const at::Tensor& idx, int64_t numel, uint8_t* dst, std::vector<int64_t>& order) {
  if (idx.scalar_type() == at::kInt) encode_impl(idx.data_ptr<int32_t>(), idx.numel(), numel, dst, order);
  else encode_impl(idx.data_ptr<int64_t>(), idx.numel(), numel, dst, order);
}

void decode_block16(const uint8_t* src, int64_t n, int64_t numel, at::Tensor& out, int from) {
  if (out.scalar_type() == at::kInt) decode_impl(src, n, numel, out.data_ptr<int32_t>(), from);
  else decode_impl(src, n, numel, out.data_ptr<int64_t>(), from);
}

}  // namespace detail

int64_t index_wire_bytes(int64_t count, int64_t numel, IndexCoding coding) {
  return detail::block16(coding, count, numel) ? detail::block16_bytes(count, numel) : detail::plain_index_bytes(count, numel);
}

}  // namespace cddp
