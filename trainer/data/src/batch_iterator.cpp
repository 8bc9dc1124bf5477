// batch_iterator.cpp — fixed-size batches over a rank's indices, resumable by batch index,
// and the gather of a batch's rows. No shuffling, prefetching or augmentation.
#include <cddp/data/batch_iterator.h>

#include <ATen/ops/empty.h>

#include <algorithm>

#include <cstring>
#include <stdexcept>
#include <string>

namespace cddp {

BatchIterator::BatchIterator(std::vector<int64_t> indices, int64_t batch_size, bool drop_last, int64_t start_batch)
    : indices_(std::move(indices)), batch_size_(batch_size) {
  if (batch_size_ < 1) throw std::invalid_argument("BatchIterator: batch_size must be >= 1, got " + std::to_string(batch_size_));
  const auto n = int64_t(indices_.size());
  num_batches_ = drop_last ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
  seek(start_batch);
}

std::vector<int64_t> BatchIterator::next() {
  if (done()) {
    throw std::out_of_range("BatchIterator: no batch left (" + std::to_string(num_batches_) + " batches this epoch)");
  }
  const int64_t begin = batch_index_ * batch_size_;
  const int64_t end = std::min<int64_t>(begin + batch_size_, int64_t(indices_.size()));
  ++batch_index_;
  return std::vector<int64_t>(indices_.begin() + begin, indices_.begin() + end);
}

void BatchIterator::seek(int64_t batch_index) {
  if (batch_index < 0 || batch_index > num_batches_) {
    throw std::out_of_range("BatchIterator: batch index " + std::to_string(batch_index) + " is outside [0, " +
                            std::to_string(num_batches_) + "]");
  }
  batch_index_ = batch_index;
}

Batch gather_batch(const Dataset& dataset, const std::vector<int64_t>& indices) {
  const int64_t n = dataset.size();
  for (int64_t i : indices) {
    if (i < 0 || i >= n) {
      throw std::out_of_range("gather_batch: index " + std::to_string(i) + " is outside dataset '" + dataset.name +
                              "' of " + std::to_string(n) + " samples");
    }
  }
  at::Tensor idx = at::empty({int64_t(indices.size())}, at::TensorOptions().dtype(at::kLong));
  if (!indices.empty()) std::memcpy(idx.data_ptr(), indices.data(), indices.size() * sizeof(int64_t));
  return Batch{dataset.images.index_select(0, idx), dataset.labels.index_select(0, idx)};
}

}  // namespace cddp
