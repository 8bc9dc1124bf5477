// metrics_writer.cpp — metrics.jsonl and summary.csv. Formatting and file handling only;
// it computes nothing and prints nothing to the console.
#include <cddp/metrics/metrics_writer.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace cddp {
namespace fs = std::filesystem;
namespace {

const std::array<const char*, 15> kKnownOrder = {
    "step",           "epoch",          "loss",
    "train_acc",      "test_loss",      "test_acc",
    "lr",             "density",        "bytes_sent",
    "bytes_received", "bytes_dense_equivalent", "compress_ms",
    "comm_ms",        "step_ms",        "residual_norm"};

bool is_integer_key(const std::string& key) { return key == "step" || key == "epoch"; }

void check_key(const std::string& key) {
  if (key.empty()) throw std::invalid_argument("MetricsWriter: empty metric name");
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f || c == ',' || c == '"' || c == '\\') {
      throw std::invalid_argument("MetricsWriter: metric name '" + key +
                                  "' contains a comma, quote, backslash or control character");
    }
  }
}

// Shortest text that reads back to `v`; integral for step/epoch. Non-finite: `nonfinite`.
std::string format_value(const std::string& key, double v, bool json) {
  if (!std::isfinite(v)) {
    if (json) return "null";
    return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  }
  char buf[64];
  std::to_chars_result r;
  if (is_integer_key(key) && std::fabs(v) < 9.2e18) {
    r = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(std::llround(v)));
  } else {
    r = std::to_chars(buf, buf + sizeof buf, v);
  }
  return std::string(buf, r.ptr);
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

// Lines of a file; `torn` tells whether the last one lacked its newline (it is dropped).
std::vector<std::string> read_lines(const fs::path& path, bool* torn) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      if (torn) *torn = true;
      break;
    }
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp.string() + ": cannot open for writing: " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(tmp.string() + ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error(path.string() + ": cannot replace with " + tmp.string() + ": " + ec.message());
}

// The "step" of one of our JSON lines, or false.
bool json_step(const std::string& line, long long* step) {
  const std::string key = "\"step\":";
  const size_t at = line.find(key);
  if (at == std::string::npos || line.empty() || line.front() != '{' || line.back() != '}') return false;
  const char* begin = line.c_str() + at + key.size();
  char* end = nullptr;
  errno = 0;
  *step = std::strtoll(begin, &end, 10);
  return end != begin && errno == 0;
}

}  // namespace

std::vector<std::string> MetricsWriter::ordered_keys(const std::map<std::string, double>& fields) {
  std::vector<std::string> keys;
  for (const char* k : kKnownOrder) {
    if (fields.count(k)) keys.emplace_back(k);
  }
  for (const auto& [k, v] : fields) {
    if (std::find(kKnownOrder.begin(), kKnownOrder.end(), k) == kKnownOrder.end()) keys.push_back(k);
  }
  return keys;
}

std::string MetricsWriter::to_json(const std::map<std::string, double>& fields) {
  std::string out = "{";
  bool first = true;
  for (const auto& key : ordered_keys(fields)) {
    check_key(key);
    if (!first) out += ',';
    first = false;
    out += '"' + key + "\":" + format_value(key, fields.at(key), true);
  }
  return out + "}";
}

MetricsWriter::MetricsWriter(fs::path dir, bool jsonl, bool csv, bool append)
    : dir_(std::move(dir)), jsonl_(jsonl), csv_(csv) {
  if (!jsonl_ && !csv_) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error(dir_.string() + ": cannot create the metrics directory: " + ec.message());
  if (jsonl_) open_jsonl(append);
  if (csv_) {
    if (append && fs::exists(csv_path(), ec)) {
      const std::vector<std::string> lines = read_lines(csv_path(), nullptr);  // a torn last row is dropped
      if (!lines.empty()) {
        csv_columns_ = split_csv_line(lines[0]);
        for (size_t i = 1; i < lines.size(); ++i) {
          if (lines[i].empty()) continue;
          std::vector<std::string> cells = split_csv_line(lines[i]);
          if (cells.size() != csv_columns_.size()) {
            throw std::runtime_error(csv_path().string() + ": line " + std::to_string(i + 1) + " has " +
                                     std::to_string(cells.size()) + " cells, the header has " +
                                     std::to_string(csv_columns_.size()));
          }
          csv_rows_.push_back(std::move(cells));
        }
      }
      rewrite_csv();  // normalizes a torn last line away
    } else {
      rewrite_csv();  // fresh: empty file
    }
  }
}

MetricsWriter::~MetricsWriter() {
  if (jsonl_out_.is_open()) jsonl_out_.flush();  // never throw from a destructor
}

void MetricsWriter::open_jsonl(bool append) {
  std::error_code ec;
  bool needs_newline = false;
  if (append && fs::exists(jsonl_path(), ec) && fs::file_size(jsonl_path(), ec) > 0) {
    std::ifstream in(jsonl_path(), std::ios::binary);
    in.seekg(-1, std::ios::end);
    char last = '\n';
    in.get(last);
    needs_newline = last != '\n';
  }
  jsonl_out_.open(jsonl_path(), std::ios::binary | (append ? std::ios::app : std::ios::trunc));
  if (!jsonl_out_) throw std::runtime_error(jsonl_path().string() + ": cannot open for writing: " + std::strerror(errno));
  if (needs_newline) jsonl_out_ << '\n';
}

void MetricsWriter::log_step(const std::map<std::string, double>& fields) {
  if (!jsonl_) return;
  jsonl_out_ << to_json(fields) << '\n';
  if (!jsonl_out_) throw std::runtime_error(jsonl_path().string() + ": write failed");
}

void MetricsWriter::log_epoch(const std::map<std::string, double>& fields) {
  if (!csv_) return;
  std::vector<std::string> keys = ordered_keys(fields);
  for (const auto& k : keys) check_key(k);
  bool widened = false;
  for (const auto& k : keys) {
    if (std::find(csv_columns_.begin(), csv_columns_.end(), k) == csv_columns_.end()) widened = true;
  }
  if (widened) {  // new header: union of the columns, in the stable order
    std::map<std::string, double> all;
    for (const auto& c : csv_columns_) all[c] = 0;
    for (const auto& k : keys) all[k] = 0;
    const std::vector<std::string> columns = ordered_keys(all);
    for (auto& row : csv_rows_) {
      std::vector<std::string> cells(columns.size());
      for (size_t i = 0; i < csv_columns_.size(); ++i) {
        cells[size_t(std::find(columns.begin(), columns.end(), csv_columns_[i]) - columns.begin())] = row[i];
      }
      row = std::move(cells);
    }
    csv_columns_ = columns;
  }
  std::vector<std::string> row(csv_columns_.size());
  for (size_t i = 0; i < csv_columns_.size(); ++i) {
    const auto it = fields.find(csv_columns_[i]);
    if (it != fields.end()) row[i] = format_value(it->first, it->second, false);
  }
  csv_rows_.push_back(row);
  if (widened) {
    rewrite_csv();
    return;
  }
  std::ofstream out(csv_path(), std::ios::binary | std::ios::app);
  std::string line;
  for (size_t i = 0; i < row.size(); ++i) line += (i ? "," : "") + row[i];
  out << line << '\n';
  out.flush();
  if (!out) throw std::runtime_error(csv_path().string() + ": write failed");
}

void MetricsWriter::rewrite_csv() {
  std::string text;
  if (!csv_columns_.empty()) {
    for (size_t i = 0; i < csv_columns_.size(); ++i) text += (i ? "," : "") + csv_columns_[i];
    text += '\n';
    for (const auto& row : csv_rows_) {
      for (size_t i = 0; i < row.size(); ++i) text += (i ? "," : "") + row[i];
      text += '\n';
    }
  }
  write_atomically(csv_path(), text);
}

void MetricsWriter::flush() {
  if (!jsonl_out_.is_open()) return;
  jsonl_out_.flush();
  if (!jsonl_out_) throw std::runtime_error(jsonl_path().string() + ": write failed");
}

void MetricsWriter::truncate_after(int64_t step, int64_t epoch) {
  if (jsonl_) {
    jsonl_out_.flush();
    jsonl_out_.close();
    std::string text;
    for (const auto& line : read_lines(jsonl_path(), nullptr)) {
      long long s = 0;
      if (json_step(line, &s) && s <= step) text += line + '\n';
    }
    write_atomically(jsonl_path(), text);
    open_jsonl(true);
  }
  if (csv_) {
    const auto col = std::find(csv_columns_.begin(), csv_columns_.end(), "epoch");
    if (col != csv_columns_.end()) {
      const size_t c = size_t(col - csv_columns_.begin());
      std::vector<std::vector<std::string>> kept;
      for (auto& row : csv_rows_) {
        char* end = nullptr;
        const double e = std::strtod(row[c].c_str(), &end);
        if (row[c].empty() || end == row[c].c_str() || e <= double(epoch)) kept.push_back(std::move(row));
      }
      csv_rows_ = std::move(kept);
    }
    rewrite_csv();
  }
}

}  // namespace cddp
