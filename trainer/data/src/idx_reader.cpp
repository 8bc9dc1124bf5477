// idx_reader.cpp — IDX parsing and gzip handling with zlib. Strict: any inconsistency in a
// file is an error naming the file; nothing is repaired or guessed.
#include <cddp/data/idx_reader.h>

#include <ATen/ops/empty.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace cddp {
namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

std::string hex_byte(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02x", unsigned(b));
  return buf;
}

const char* type_name(uint8_t code) {
  switch (code) {
    case 0x08: return "uint8";
    case 0x09: return "int8";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

std::vector<uint8_t> read_raw(const std::filesystem::path& path) {
  const std::string src = path.string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(src, "file does not exist");
  if (!std::filesystem::is_regular_file(path, ec)) fail(src, "not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(src, std::string("cannot open for reading: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size < 0) fail(src, "cannot determine the file size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) fail(src, "read error");
  return bytes;
}

std::vector<uint8_t> gunzip(const std::vector<uint8_t>& raw, const std::string& src) {
  z_stream s{};
  if (inflateInit2(&s, 15 + 16) != Z_OK) fail(src, "zlib inflateInit2 failed");
  std::vector<uint8_t> out(std::max<size_t>(raw.size() * 4, 1 << 16));
  size_t produced = 0, in_pos = 0;
  std::string error;
  while (true) {
    if (s.avail_in == 0 && in_pos < raw.size()) {
      const size_t n = std::min<size_t>(raw.size() - in_pos, size_t{1} << 30);
      s.next_in = const_cast<Bytef*>(raw.data() + in_pos);
      s.avail_in = static_cast<uInt>(n);
      in_pos += n;
    }
    if (out.size() - produced < (1 << 16)) out.resize(out.size() * 2);
    const size_t room = std::min<size_t>(out.size() - produced, size_t{1} << 30);
    s.next_out = out.data() + produced;
    s.avail_out = static_cast<uInt>(room);
    const int ret = inflate(&s, Z_NO_FLUSH);
    produced += room - s.avail_out;
    const bool input_left = s.avail_in > 0 || in_pos < raw.size();
    if (ret == Z_STREAM_END) {
      if (!input_left) break;
      inflateReset(&s);  // concatenated gzip members
      continue;
    }
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && s.avail_out == 0) continue;  // output full; grown at the top of the loop
    if (ret == Z_BUF_ERROR && !input_left) {
      error = "truncated gzip stream (unexpected end of file after " + std::to_string(raw.size()) +
              " compressed bytes)";
      break;
    }
    error = std::string("corrupt gzip data (zlib: ") + (s.msg ? s.msg : "error " + std::to_string(ret)) + ")";
    break;
  }
  inflateEnd(&s);
  if (!error.empty()) fail(src, error);
  out.resize(produced);
  out.shrink_to_fit();
  return out;
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string t;
  for (size_t i = 0; i < dims.size(); ++i) t += (i ? "x" : "") + std::to_string(dims[i]);
  return t;
}

}  // namespace

int idx_element_size(uint8_t type_code) {
  switch (type_code) {
    case 0x08:
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C:
    case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
  }
}

int64_t IdxArray::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<uint8_t> read_maybe_gzipped_file(const std::filesystem::path& path) {
  std::vector<uint8_t> raw = read_raw(path);
  if (raw.size() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) return gunzip(raw, path.string());
  return raw;
}

IdxArray parse_idx(std::vector<uint8_t> bytes, const std::string& source) {
  if (bytes.size() < 4) {
    fail(source, "too short for an IDX header: " + std::to_string(bytes.size()) + " bytes, expected at least 4");
  }
  if (bytes[0] != 0 || bytes[1] != 0) {
    fail(source, "not an IDX file: magic bytes are " + hex_byte(bytes[0]) + " " + hex_byte(bytes[1]) + " " +
                     hex_byte(bytes[2]) + " " + hex_byte(bytes[3]) + ", expected 00 00 <type> <ndims>");
  }
  const uint8_t code = bytes[2];
  const int esize = idx_element_size(code);
  if (esize == 0) {
    fail(source, "unknown IDX type code 0x" + hex_byte(code) +
                     ", expected 0x08 (uint8), 0x09 (int8), 0x0b (int16), 0x0c (int32), 0x0d (float32) or 0x0e (float64)");
  }
  const int ndims = bytes[3];
  if (ndims == 0) fail(source, "IDX header declares 0 dimensions, expected at least 1");
  const size_t header = 4 + 4 * size_t(ndims);
  if (bytes.size() < header) {
    fail(source, "truncated IDX header: " + std::to_string(ndims) + " dimensions need " + std::to_string(header) +
                     " header bytes, the file has " + std::to_string(bytes.size()));
  }
  IdxArray array;
  array.type = static_cast<IdxType>(code);
  const int64_t max_bytes = int64_t{1} << 40;
  int64_t numel = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = bytes.data() + 4 + 4 * i;
    const int64_t d = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | int64_t(p[3]);
    if (d == 0) fail(source, "IDX dimension " + std::to_string(i) + " is 0, expected a positive size");
    if (numel > max_bytes / d) fail(source, "IDX dimensions are implausibly large (over 2^40 elements)");
    numel *= d;
    array.dims.push_back(d);
  }
  const size_t expected = size_t(numel) * size_t(esize);
  const size_t actual = bytes.size() - header;
  const std::string declared = "the header declares " + dims_text(array.dims) + " " + type_name(code) + " = " +
                               std::to_string(expected) + " data bytes";
  if (actual < expected) fail(source, "truncated IDX data: " + declared + ", but only " + std::to_string(actual) + " follow");
  if (actual > expected) {
    fail(source, "unexpected trailing bytes: " + declared + ", but " + std::to_string(actual) + " follow");
  }
  bytes.erase(bytes.begin(), bytes.begin() + std::ptrdiff_t(header));
  array.data = std::move(bytes);
  return array;
}

IdxArray read_idx(const std::filesystem::path& path) {
  return parse_idx(read_maybe_gzipped_file(path), path.string());
}

at::Tensor idx_to_tensor(const IdxArray& array) {
  at::ScalarType dtype;
  switch (array.type) {
    case IdxType::UInt8: dtype = at::kByte; break;
    case IdxType::Int8: dtype = at::kChar; break;
    case IdxType::Int16: dtype = at::kShort; break;
    case IdxType::Int32: dtype = at::kInt; break;
    case IdxType::Float32: dtype = at::kFloat; break;
    case IdxType::Float64: dtype = at::kDouble; break;
    default: throw std::invalid_argument("idx_to_tensor: invalid IdxType");
  }
  const int esize = idx_element_size(static_cast<uint8_t>(array.type));
  const int64_t n = array.numel();
  if (array.data.size() != size_t(n) * size_t(esize)) {
    throw std::invalid_argument("idx_to_tensor: data holds " + std::to_string(array.data.size()) + " bytes, dims " +
                                dims_text(array.dims) + " need " + std::to_string(size_t(n) * size_t(esize)));
  }
  at::Tensor t = at::empty(array.dims, at::TensorOptions().dtype(dtype));
  auto* dst = static_cast<uint8_t*>(t.data_ptr());
  const uint8_t* src = array.data.data();
  if (esize == 1) {
    std::memcpy(dst, src, array.data.size());
    return t;
  }
  for (int64_t i = 0; i < n; ++i) {  // big-endian → native
    uint64_t v = 0;
    for (int b = 0; b < esize; ++b) v = (v << 8) | src[i * esize + b];
    if (esize == 2) {
      const uint16_t x = uint16_t(v);
      std::memcpy(dst + i * 2, &x, 2);
    } else if (esize == 4) {
      const uint32_t x = uint32_t(v);
      std::memcpy(dst + i * 4, &x, 4);
    } else {
      std::memcpy(dst + i * 8, &v, 8);
    }
  }
  return t;
}

void write_idx(const std::filesystem::path& path, const IdxArray& array, bool gzip) {
  const std::string src = path.string();
  const int esize = idx_element_size(static_cast<uint8_t>(array.type));
  if (esize == 0 || array.dims.empty() || array.dims.size() > 255) fail(src, "write_idx: invalid type or dimensions");
  if (array.data.size() != size_t(array.numel()) * size_t(esize)) {
    fail(src, "write_idx: data size does not match dims " + dims_text(array.dims));
  }
  std::vector<uint8_t> bytes = {0, 0, static_cast<uint8_t>(array.type), static_cast<uint8_t>(array.dims.size())};
  for (int64_t d : array.dims) {
    if (d <= 0 || d > int64_t{0xFFFFFFFF}) fail(src, "write_idx: dimension out of range");
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(uint8_t((uint64_t(d) >> s) & 0xFF));
  }
  bytes.insert(bytes.end(), array.data.begin(), array.data.end());
  if (gzip) {
    gzFile f = gzopen(src.c_str(), "wb");
    if (!f) fail(src, std::string("cannot open for writing: ") + std::strerror(errno));
    size_t off = 0;
    bool ok = true;
    while (ok && off < bytes.size()) {
      const unsigned chunk = unsigned(std::min<size_t>(bytes.size() - off, size_t{1} << 30));
      ok = gzwrite(f, bytes.data() + off, chunk) == int(chunk);
      off += chunk;
    }
    if (gzclose(f) != Z_OK || !ok) fail(src, "gzip write failed");
    return;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(src, std::string("cannot open for writing: ") + std::strerror(errno));
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!out.flush()) fail(src, "write failed");
}

}  // namespace cddp
