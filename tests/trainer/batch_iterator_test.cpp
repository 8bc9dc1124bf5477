// batch_iterator_test.cpp — BatchIterator batching, drop_last, resuming mid-epoch by batch
// index, and gather_batch's rows and errors. It loads no real dataset.
#include <cddp/data/batch_iterator.h>

#include <ATen/ops/arange.h>
#include <gtest/gtest.h>

#include <stdexcept>

TEST(BatchIterator, BatchesAndShortLastBatch) {
  cddp::BatchIterator it({9, 8, 7, 6, 5, 4, 3, 2, 1, 0}, 3);
  EXPECT_EQ(it.num_batches(), 4);
  EXPECT_EQ(it.batch_index(), 0);
  EXPECT_EQ(it.next(), (std::vector<int64_t>{9, 8, 7}));
  EXPECT_EQ(it.batch_index(), 1);
  EXPECT_EQ(it.next(), (std::vector<int64_t>{6, 5, 4}));
  EXPECT_EQ(it.next(), (std::vector<int64_t>{3, 2, 1}));
  EXPECT_FALSE(it.done());
  EXPECT_EQ(it.next(), (std::vector<int64_t>{0}));
  EXPECT_TRUE(it.done());
  EXPECT_THROW(it.next(), std::out_of_range);
}

TEST(BatchIterator, DropLast) {
  cddp::BatchIterator it({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 3, /*drop_last=*/true);
  EXPECT_EQ(it.num_batches(), 3);
  it.next();
  it.next();
  EXPECT_EQ(it.next(), (std::vector<int64_t>{6, 7, 8}));
  EXPECT_TRUE(it.done());
  EXPECT_EQ(cddp::BatchIterator({}, 4).num_batches(), 0);
}

TEST(BatchIterator, ResumesMidEpoch) {
  const std::vector<int64_t> idx = {10, 11, 12, 13, 14, 15, 16};
  cddp::BatchIterator first(idx, 2);
  first.next();
  first.next();
  const int64_t saved = first.batch_index();  // what a checkpoint stores
  const auto expected = first.next();
  cddp::BatchIterator resumed(idx, 2, false, saved);
  EXPECT_EQ(resumed.batch_index(), 2);
  EXPECT_EQ(resumed.next(), expected);
  resumed.seek(0);
  EXPECT_EQ(resumed.next(), (std::vector<int64_t>{10, 11}));
  resumed.seek(resumed.num_batches());
  EXPECT_TRUE(resumed.done());
  EXPECT_THROW(resumed.seek(5), std::out_of_range);
  EXPECT_THROW(cddp::BatchIterator(idx, 2, false, -1), std::out_of_range);
  EXPECT_THROW(cddp::BatchIterator(idx, 0), std::invalid_argument);
}

TEST(BatchIterator, GatherBatch) {
  cddp::Dataset ds;
  ds.name = "toy";
  ds.images = at::arange(5 * 1 * 2 * 2, at::TensorOptions().dtype(at::kFloat)).reshape({5, 1, 2, 2});
  ds.labels = at::arange(5, at::TensorOptions().dtype(at::kLong));
  const cddp::Batch b = cddp::gather_batch(ds, {4, 0, 4});
  EXPECT_EQ(b.images.sizes().vec(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(b.labels.sizes().vec(), (std::vector<int64_t>{3}));
  const auto* labels = static_cast<const int64_t*>(b.labels.data_ptr());
  EXPECT_EQ(labels[0], 4);
  EXPECT_EQ(labels[1], 0);
  EXPECT_EQ(static_cast<const float*>(b.images.contiguous().data_ptr())[4], 0.0f);  // row of sample 0
  EXPECT_EQ(static_cast<const float*>(b.images.contiguous().data_ptr())[0], 16.0f);
  EXPECT_THROW(cddp::gather_batch(ds, {5}), std::out_of_range);
  EXPECT_THROW(cddp::gather_batch(ds, {-1}), std::out_of_range);
}
