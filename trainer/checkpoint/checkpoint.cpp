// checkpoint.cpp — reading, writing, listing, pruning and choosing cddp-train checkpoints
// (format in checkpoint.h). It will not decide when to save and does not log: problems
// travel as CheckpointError messages, notes as strings.
#include "checkpoint/checkpoint.h"

#include "config/config_loader.h"

#include <cddp/fnv1a64.h>

#include <torch/serialize/archive.h>
#include <torch/version.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace cddp::train {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'C', 'D', 'D', 'P', 'C', 'K', 'P', 'T'};
constexpr char kEndMagic[8] = {'C', 'K', 'P', 'T', 'E', 'N', 'D', '\0'};

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

class Cursor {
 public:
  Cursor(const std::string& data, const fs::path& path) : d_(data), path_(path) {}
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, d_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string bytes(uint64_t n, const char* what) {
    need(n, what);
    std::string s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }
  void need(uint64_t n, const char* what) const {
    if (n > d_.size() - pos_)
      throw CheckpointError(path_.string() + ": truncated checkpoint (file ends inside the " + what + ": " +
                            std::to_string(d_.size()) + " bytes)");
  }

 private:
  const std::string& d_;
  const fs::path& path_;
  size_t pos_ = 0;
};

std::map<std::string, std::string> meta_fields(const CheckpointMeta& m) {
  return {{"step", std::to_string(m.step)},
          {"epoch", std::to_string(m.epoch)},
          {"batch_in_epoch", std::to_string(m.batch_in_epoch)},
          {"rank", std::to_string(m.rank)},
          {"world_size", std::to_string(m.world_size)},
          {"sampler_seed", std::to_string(m.sampler_seed)},
          {"config_hash", std::to_string(m.config_hash)},
          {"model", m.model_fingerprint},
          {"compressor", m.compressor_fingerprint},
          {"config", m.config_toml},
          {"torch_version", m.torch_version},
          {"cddp_version", m.cddp_version},
          {"bytes_sent", std::to_string(m.bytes_sent)},
          {"bytes_received", std::to_string(m.bytes_received)},
          {"bytes_dense_equivalent", std::to_string(m.bytes_dense_equivalent)},
          {"elapsed_s", std::to_string(m.elapsed_s)},
          {"input_shape", [&] {
             std::string out;
             for (size_t i = 0; i < m.input_shape.size(); ++i) out += (i ? "," : "") + std::to_string(m.input_shape[i]);
             return out;
           }()}};
}

int64_t to_i64(const std::map<std::string, std::string>& f, const char* key, const fs::path& path) {
  auto it = f.find(key);
  if (it == f.end()) throw CheckpointError(path.string() + ": corrupt checkpoint header (no '" + key + "')");
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    throw CheckpointError(path.string() + ": corrupt checkpoint header ('" + key + "' = '" + it->second + "')");
  }
}

std::string read_whole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(path.string() + ": cannot open checkpoint: " + std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

void fsync_path(const fs::path& p, int flags) {
  int fd = ::open(p.c_str(), flags);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

std::string checkpoint_file_name(int64_t step, int64_t rank) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "ckpt-step%09lld-rank%lld.pt", (long long)step, (long long)rank);
  return buf;
}

bool parse_checkpoint_file_name(const std::string& name, int64_t& step, int64_t& rank) {
  long long s = -1, r = -1;
  int consumed = 0;
  if (std::sscanf(name.c_str(), "ckpt-step%lld-rank%lld.pt%n", &s, &r, &consumed) != 2) return false;
  if (consumed != int(name.size()) || s < 0 || r < 0) return false;
  step = s, rank = r;
  return true;
}

void write_checkpoint_file(const fs::path& path, const CheckpointMeta& meta, const std::string& payload) {
  std::string data(kMagic, 8);
  put<uint32_t>(data, kCheckpointFormatVersion);
  const auto fields = meta_fields(meta);
  put<uint32_t>(data, uint32_t(fields.size()));
  for (const auto& [k, v] : fields) {
    put<uint32_t>(data, uint32_t(k.size()));
    data += k;
    put<uint64_t>(data, uint64_t(v.size()));
    data += v;
  }
  put<uint64_t>(data, uint64_t(payload.size()));
  data += payload;
  put<uint64_t>(data, fnv1a64(data.data(), data.size()));
  data.append(kEndMagic, 8);

  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create " + tmp.string() + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw CheckpointError("cannot write " + tmp.string() + ": " + why);
    }
    off += size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw CheckpointError("cannot flush " + tmp.string() + ": " + why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw CheckpointError("cannot rename " + tmp.string() + " to " + path.string() + ": " + why);
  }
  fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path(), O_RDONLY | O_DIRECTORY);
}

CheckpointMeta read_checkpoint_file(const fs::path& path, std::string* payload) {
  if (!fs::exists(path)) throw CheckpointError(path.string() + ": no such checkpoint");
  const std::string data = read_whole(path);
  Cursor c(data, path);
  if (data.size() < 8 || std::memcmp(data.data(), kMagic, 8) != 0)
    throw CheckpointError(path.string() + ": not a cddp-train checkpoint (bad magic number)");
  c.bytes(8, "magic");
  const uint32_t version = c.get<uint32_t>("header");
  if (version != kCheckpointFormatVersion)
    throw CheckpointError(path.string() + ": checkpoint format version " + std::to_string(version) +
                          ", this build reads version " + std::to_string(kCheckpointFormatVersion));
  const uint32_t n = c.get<uint32_t>("header");
  if (n > 1000) throw CheckpointError(path.string() + ": corrupt checkpoint header (" + std::to_string(n) + " fields)");
  std::map<std::string, std::string> f;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t kl = c.get<uint32_t>("header");
    std::string k = c.bytes(kl, "header");
    const uint64_t vl = c.get<uint64_t>("header");
    f[k] = c.bytes(vl, "header");
  }
  const uint64_t pl = c.get<uint64_t>("payload length");
  c.need(pl, "payload");
  const size_t payload_at = c.pos();
  if (data.size() - payload_at < pl + 16)
    throw CheckpointError(path.string() + ": truncated checkpoint (" + std::to_string(data.size()) +
                          " bytes; the payload and trailer need " + std::to_string(payload_at + pl + 16) + ")");
  const size_t sum_at = payload_at + pl;
  uint64_t stored;
  std::memcpy(&stored, data.data() + sum_at, 8);
  if (std::memcmp(data.data() + sum_at + 8, kEndMagic, 8) != 0)
    throw CheckpointError(path.string() + ": corrupt checkpoint (no end marker)");
  if (data.size() != sum_at + 16)
    throw CheckpointError(path.string() + ": corrupt checkpoint (" + std::to_string(data.size() - sum_at - 16) +
                          " stray bytes after the end marker)");
  if (fnv1a64(data.data(), sum_at) != stored)
    throw CheckpointError(path.string() + ": corrupt checkpoint (checksum mismatch)");

  CheckpointMeta m;
  m.format_version = version;
  m.step = to_i64(f, "step", path);
  m.epoch = to_i64(f, "epoch", path);
  m.batch_in_epoch = to_i64(f, "batch_in_epoch", path);
  m.rank = to_i64(f, "rank", path);
  m.world_size = to_i64(f, "world_size", path);
  m.sampler_seed = uint64_t(to_i64(f, "sampler_seed", path));
  m.config_hash = std::stoull(f.count("config_hash") ? f["config_hash"] : "0");
  m.model_fingerprint = f["model"];
  m.compressor_fingerprint = f["compressor"];
  m.config_toml = f["config"];
  m.torch_version = f["torch_version"];
  m.cddp_version = f["cddp_version"];
  m.bytes_sent = to_i64(f, "bytes_sent", path);
  m.bytes_received = to_i64(f, "bytes_received", path);
  m.bytes_dense_equivalent = to_i64(f, "bytes_dense_equivalent", path);
  m.elapsed_s = f.count("elapsed_s") ? std::atof(f["elapsed_s"].c_str()) : 0.0;
  {
    std::stringstream ss(f["input_shape"]);
    for (std::string x; std::getline(ss, x, ',');) m.input_shape.push_back(std::atoll(x.c_str()));
  }
  if (payload) *payload = data.substr(payload_at, pl);
  return m;
}

std::string save_training_state(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer,
                                 const at::Generator& generator) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive, optim_archive;
  model.save(model_archive);
  optimizer.save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  at::Tensor rng;
  {
    std::lock_guard<std::mutex> lock(const_cast<at::Generator&>(generator).mutex());
    rng = generator.get_state();
  }
  archive.write("rng_state", rng);
  std::string out;
  archive.save_to([&](const void* buf, size_t n) {
    out.append(static_cast<const char*>(buf), n);
    return n;
  });
  return out;
}

void load_training_state(const std::string& payload, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                         at::Generator* generator) {
  torch::serialize::InputArchive archive;
  archive.load_from(payload.data(), payload.size(), at::Device(at::kCPU));
  torch::serialize::InputArchive model_archive;
  if (!archive.try_read("model", model_archive)) throw CheckpointError("checkpoint holds no model state");
  // Module::load replaces tensors whatever their shape: compare shapes ourselves.
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& p : model.named_parameters()) shapes.emplace_back(p.key(), p.value().sizes().vec());
  for (const auto& b : model.named_buffers()) shapes.emplace_back(b.key(), b.value().sizes().vec());
  std::vector<at::Device> devices;
  for (const auto& p : model.parameters()) devices.push_back(p.device());
  try {
    model.load(model_archive);
  } catch (const c10::Error& e) {
    throw CheckpointError(std::string("checkpoint does not fit this model: ") + e.what_without_backtrace());
  }
  size_t i = 0;
  auto check = [&](const std::string& name, const at::Tensor& t) {
    const auto& want = shapes[i++];
    if (want.first != name || want.second != t.sizes().vec())
      throw CheckpointError("checkpoint does not fit this model: '" + name + "' has shape " +
                            c10::str(t.sizes()) + " in the checkpoint, " + c10::str(at::IntArrayRef(want.second)) +
                            " in the model");
  };
  for (const auto& p : model.named_parameters()) check(p.key(), p.value());
  for (const auto& b : model.named_buffers()) check(b.key(), b.value());
  if (optimizer) {
    torch::serialize::InputArchive optim_archive;
    if (!archive.try_read("optimizer", optim_archive)) throw CheckpointError("checkpoint holds no optimizer state");
    try {
      optimizer->load(optim_archive);
    } catch (const c10::Error& e) {
      throw CheckpointError(std::string("cannot restore the optimizer: ") + e.what_without_backtrace());
    }
  }
  if (generator) {
    at::Tensor rng;
    if (!archive.try_read("rng_state", rng)) throw CheckpointError("checkpoint holds no RNG state");
    std::lock_guard<std::mutex> lock(generator->mutex());
    generator->set_state(rng);
  }
}

std::vector<CheckpointSet> list_checkpoints(const fs::path& dir) {
  std::map<int64_t, CheckpointSet> sets;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    int64_t step, rank;
    if (!e.is_regular_file() || !parse_checkpoint_file_name(e.path().filename().string(), step, rank)) continue;
    auto& s = sets[step];
    s.step = step;
    s.files[rank] = e.path();
  }
  std::vector<CheckpointSet> out;
  for (auto& [step, s] : sets) out.push_back(std::move(s));
  return out;
}

std::vector<fs::path> prune_checkpoints(const fs::path& dir, int64_t rank, int64_t keep) {
  std::vector<fs::path> removed;
  if (keep <= 0) return removed;
  std::vector<std::pair<int64_t, fs::path>> mine;
  for (const auto& s : list_checkpoints(dir)) {
    auto it = s.files.find(rank);
    if (it != s.files.end()) mine.emplace_back(s.step, it->second);
  }
  if (int64_t(mine.size()) <= keep) return removed;
  for (size_t i = 0; i + size_t(keep) < mine.size(); ++i) {
    std::error_code ec;
    if (fs::remove(mine[i].second, ec)) removed.push_back(mine[i].second);
  }
  return removed;
}

namespace {

void check_compatible(const CheckpointMeta& m, const fs::path& path, const ResumeExpectation& e) {
  if (m.world_size != e.world_size)
    throw CheckpointMismatch(path.string() + " was written by a run with world size " + std::to_string(m.world_size) +
                          "; this run has world size " + std::to_string(e.world_size) +
                          " (each rank's residual is its own: resume with the same number of ranks, or set "
                          "checkpoint.resume = \"never\" / another checkpoint.dir)");
  if (m.model_fingerprint != e.model_fingerprint)
    throw CheckpointMismatch(path.string() + " holds a different model: checkpoint '" + m.model_fingerprint +
                          "', this run '" + e.model_fingerprint + "'");
  if (m.compressor_fingerprint != e.compressor_fingerprint)
    throw CheckpointMismatch(path.string() + " was trained with a different compressor: checkpoint '" +
                          m.compressor_fingerprint + "', this run '" + e.compressor_fingerprint + "'");
}

// Every rank's file of `s` must be present and valid; returns this rank's header.
CheckpointMeta validate_set(const CheckpointSet& s, const ResumeExpectation& e, fs::path& mine) {
  for (int64_t r = 0; r < e.world_size; ++r)
    if (!s.files.count(r)) {
      // A header from any present file tells a world-size mismatch from a missing file.
      for (const auto& [rank, path] : s.files) {
        CheckpointMeta m = read_checkpoint_file(path);
        check_compatible(m, path, e);
      }
      throw CheckpointError("step " + std::to_string(s.step) + " is incomplete: no file for rank " +
                            std::to_string(r) + " (" + checkpoint_file_name(s.step, r) + ")");
    }
  CheckpointMeta own;
  for (const auto& [rank, path] : s.files) {
    CheckpointMeta m = read_checkpoint_file(path);
    check_compatible(m, path, e);
    if (m.step != s.step || m.rank != rank)
      throw CheckpointError(path.string() + ": its header says step " + std::to_string(m.step) + " rank " +
                            std::to_string(m.rank) + ", unlike its name");
    if (rank == e.rank) own = m, mine = path;
  }
  if (int64_t(s.files.size()) > e.world_size) {
    CheckpointMeta m = read_checkpoint_file(s.files.rbegin()->second);
    check_compatible(m, s.files.rbegin()->second, e);
  }
  return own;
}

ResumeChoice newest_complete(const fs::path& dir, const ResumeExpectation& e, bool must_find) {
  ResumeChoice choice;
  auto sets = list_checkpoints(dir);
  if (sets.empty()) {
    if (must_find) throw CheckpointError("no checkpoint (ckpt-step*-rank*.pt) in " + dir.string());
    return choice;
  }
  for (auto it = sets.rbegin(); it != sets.rend(); ++it) {
    try {
      fs::path mine;
      choice.meta = validate_set(*it, e, mine);
      choice.file = mine;
      choice.resume = true;
      return choice;
    } catch (const CheckpointMismatch&) {
      throw;  // a checkpoint of another run shape is a refusal, not something to skip
    } catch (const CheckpointError& err) {
      choice.notes.push_back("skipped step " + std::to_string(it->step) + ": " + err.what());
    }
  }
  std::string why = "checkpoints exist in " + dir.string() + " but none is complete and valid; refusing to start "
                    "from scratch (set checkpoint.resume = \"never\" to do so):";
  for (const auto& n : choice.notes) why += "\n  " + n;
  throw CheckpointError(why);
}

}  // namespace

ResumeChoice choose_resume(const std::string& resume, const fs::path& dir, const ResumeExpectation& e) {
  if (resume == "never") return {};
  if (resume == "auto") return newest_complete(dir, e, false);
  const fs::path p(resume);
  if (fs::is_directory(p)) return newest_complete(p, e, true);
  int64_t step, rank;
  if (!parse_checkpoint_file_name(p.filename().string(), step, rank))
    throw CheckpointError("checkpoint.resume = '" + resume + "' is neither \"auto\", \"never\", a directory nor a " +
                          "checkpoint file named ckpt-step<N>-rank<R>.pt");
  if (!fs::exists(p)) throw CheckpointError(resume + ": no such checkpoint");
  CheckpointSet s;
  s.step = step;
  for (int64_t r = 0; r < std::max<int64_t>(e.world_size, rank + 1); ++r) {
    fs::path f = p.parent_path() / checkpoint_file_name(step, r);
    if (fs::exists(f)) s.files[r] = f;
  }
  ResumeChoice choice;
  fs::path mine;
  choice.meta = validate_set(s, e, mine);
  choice.file = mine;
  choice.resume = true;
  return choice;
}

}  // namespace cddp::train
