// compressed_sgd.cpp — CompressedSGD::step(): error feedback, compression, exchange, update.
#include <cddp/compressed_sgd.h>
#include <cddp/gradient_exchange.h>
#include <cddp/local_communicator.h>

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/serialize/archive.h>

#include <chrono>
#include <sstream>
#include <cmath>
#include <optional>
#include <type_traits>
#include <unordered_map>

namespace cddp {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
}  // namespace

bool glob_match(const std::string& pattern, const std::string& text) {
  size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

const char* route_name(Route r) {
  switch (r) {
    case Route::Sparse: return "sparse-allgather";
    case Route::SharedIndices: return "shared-indices-allreduce";
    case Route::Dense: return "dense-allreduce";
  }
  return "?";
}

// ---------------------------------------------------------------- Options / ParamState

CompressedSGDOptions::CompressedSGDOptions(double lr) : lr_(lr) {}

void CompressedSGDOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(dampening);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(nesterov);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(density);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(error_feedback);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual_lr_scaling);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_mode);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(scope);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(seed);
}

void CompressedSGDOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, momentum);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, dampening);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, nesterov);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, density);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, error_feedback);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, residual_lr_scaling);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(std::string, momentum_mode);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(std::string, scope);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, seed);
}

void CompressedSGDParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual_lr);
}

void CompressedSGDParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, momentum_buffer);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, residual);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, residual_lr);
}

// ---------------------------------------------------------------- construction

namespace {
void check_options(const CompressedSGDOptions& o) {
  TORCH_CHECK(o.lr() >= 0, "Invalid learning rate: ", o.lr());
  TORCH_CHECK(o.momentum() >= 0, "Invalid momentum value: ", o.momentum());
  TORCH_CHECK(o.dampening() >= 0, "Invalid dampening value: ", o.dampening());
  TORCH_CHECK(o.weight_decay() >= 0, "Invalid weight_decay value: ", o.weight_decay());
  TORCH_CHECK(!o.nesterov() || (o.momentum() > 0 && o.dampening() == 0),
              "Nesterov momentum requires a momentum and zero dampening");
  TORCH_CHECK(o.density() < 0 || (o.density() > 0 && o.density() <= 1),
              "Invalid compression ratio (density): ", o.density(), "; expected 0 < ratio <= 1");
  for (const auto& r : o.rules())
    TORCH_CHECK(r.density < 0 || (r.density > 0 && r.density <= 1), "Invalid compression ratio ", r.density,
                " in rule '", r.match, "'; expected 0 < ratio <= 1");
  TORCH_CHECK(o.momentum_mode() == "global" || o.momentum_mode() == "dgc", "Invalid momentum_mode '",
              o.momentum_mode(), "'; expected \"global\" or \"dgc\"");
  TORCH_CHECK(o.nonfinite() == "error" || o.nonfinite() == "skip_step", "Invalid nonfinite policy '",
              o.nonfinite(), "'; expected \"error\" or \"skip_step\"");
  TORCH_CHECK(o.scope() == "layer" || o.scope() == "model", "Invalid scope '", o.scope(),
              "'; expected \"layer\" or \"model\"");
  TORCH_CHECK(o.min_numel() >= 0, "Invalid min_numel: ", o.min_numel());
  TORCH_CHECK(o.index_coding() == "block16" || o.index_coding() == "plain", "Invalid index_coding '",
              o.index_coding(), "'; expected \"block16\" or \"plain\"");
  TORCH_CHECK(!(o.scope() == "model" && o.momentum_mode() == "dgc" && o.momentum() != 0),
              "scope \"model\" with momentum needs momentum_mode \"global\" (DGC's momentum correction is "
              "kept per tensor); momentum_mode is \"dgc\", the default");
}

std::vector<at::Tensor> tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : named) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> auto_named(const std::vector<at::Tensor>& params) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params.size(); ++i) out.emplace_back("param" + std::to_string(i), params[i]);
  return out;
}
}  // namespace

CompressedSGD::CompressedSGD(std::vector<std::pair<std::string, at::Tensor>> named_params,
                             CompressedSGDOptions options)
    : Optimizer({torch::optim::OptimizerParamGroup(tensors_of(named_params))},
                std::make_unique<CompressedSGDOptions>(options)) {
  check_options(options);
  for (auto& [name, t] : named_params) names_.push_back(name);
  comm_ = options.communicator() ? options.communicator() : std::make_shared<LocalCommunicator>();
  exchange_ = std::make_unique<GradientExchange>(
      *comm_, defaults_options().index_coding() == "plain" ? IndexCoding::Plain : IndexCoding::Block16);
}

CompressedSGD::CompressedSGD(std::vector<at::Tensor> params, CompressedSGDOptions options)
    : CompressedSGD(auto_named(params), std::move(options)) {}

const CompressedSGDOptions& CompressedSGD::defaults_options() const {
  return static_cast<const CompressedSGDOptions&>(defaults());
}

namespace {
template <class Key>
Key state_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;  // what 1.13's c10::guts::to_string(TensorImpl*) writes
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}
}  // namespace

CompressedSGDParamState& CompressedSGD::state_for(const at::Tensor& p) {
  // LibTorch 1.13 keys optimizer state by the TensorImpl address as a string, 2.x by the
  // address itself; the key type tells us which.
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  const Key key = state_key<Key>(p);
  auto it = state_.find(key);
  if (it == state_.end()) it = state_.emplace(key, std::make_unique<CompressedSGDParamState>()).first;
  return static_cast<CompressedSGDParamState&>(*it->second);
}

// ---------------------------------------------------------------- step

struct CompressedSGD::Item {
  at::Tensor p, g;
  std::string name;
  int64_t index = 0;
  const CompressedSGDOptions* opt = nullptr;
  CompressedSGDParamState* state = nullptr;
  std::shared_ptr<Compressor> compressor;
  double density = -1;
  bool error_feedback = true;
  bool forced_dense = false;
  Route route = Route::Dense;
  Compressed sent;
  at::Tensor average;  // [numel] contiguous: the mean over ranks of what was sent
  const SparseAverage* coalesced = nullptr;  // or, when valid, that mean as a coalesced list
};

Route CompressedSGD::route_for(const Item& it, std::string& reason) const {
  const auto& o = *it.opt;
  if (!it.compressor) return reason = "no compressor", Route::Dense;
  if (it.forced_dense) return reason = "a rule marks it dense", Route::Dense;
  if (it.p.numel() < o.min_numel())
    return reason = "numel " + std::to_string(it.p.numel()) + " < min_numel " + std::to_string(o.min_numel()),
           Route::Dense;
  if (!o.compress_1d() && it.p.dim() <= 1) return reason = "1-D tensor (bias/norm)", Route::Dense;
  const bool shared = it.compressor->shared_indices();
  const int W = comm_->world_size();
  // Sparse allgather receives (W−1)·(k·value bytes + index bytes); a dense ring allreduce moves
  // 2(W−1)/W·numel·value bytes. With 4-byte values and plain 4-byte indices: sparse wins iff
  // W·density < 1; with Block16 indices (≈ 2 bytes) iff W·density < 4/3, about.
  // Shared indices allreduce k values, so they win whenever density < 1.
  if (o.auto_dense() && it.density > 0) {
    const int64_t kk = k_for_ratio(it.density, it.p.numel());
    double vb = double(c10::elementSize(it.p.scalar_type()));
    double n = double(it.p.numel()), k = double(kk);
    double idx = double(index_wire_bytes(kk, it.p.numel(), exchange_->index_coding()));
    double sparse = shared ? k * vb : (W > 1 ? (W - 1) * (k * vb + idx) : k * vb + idx);
    double dense = W > 1 ? 2.0 * (W - 1) / W * n * vb : n * vb;
    if (sparse >= dense) {
      reason = "sparse bytes " + std::to_string(int64_t(sparse)) + " >= dense bytes " + std::to_string(int64_t(dense));
      return Route::Dense;
    }
  }
  reason = shared ? "indices shared across ranks" : "compressed";
  return shared ? Route::SharedIndices : Route::Sparse;
}

bool CompressedSGD::nonfinite_skip(const std::vector<Item>& items) {
  const Item* bad = nullptr;
  for (const auto& it : items)
    if (!at::isfinite(it.g).all().item<bool>()) {
      bad = &it;
      break;
    }
  GradientExchange& exchange = *exchange_;
  const bool anywhere = exchange.any_rank(bad != nullptr);  // every rank takes the same decision
  if (!anywhere) return false;
  if (defaults_options().nonfinite() == "skip_step") return true;
  if (bad)
    TORCH_CHECK(false, "non-finite gradient (NaN or Inf) in parameter '", bad->name, "' at step ", step_ + 1,
                " on rank ", comm_->rank(), "; set nonfinite = \"skip_step\" to skip such steps");
  TORCH_CHECK(false, "non-finite gradient (NaN or Inf) on another rank at step ", step_ + 1,
              "; stopping on every rank");
}

at::Tensor CompressedSGD::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  const int W = comm_->world_size();
  StepStats st;
  st.step = step_ + 1;

  // 1. Collect gradients: g = grad + weight_decay·p (exactly as torch::optim::SGD does).
  std::vector<Item> items;
  int64_t flat_index = 0;
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const CompressedSGDOptions&>(group.options());
    for (auto& p : group.params()) {
      const int64_t index = flat_index++;
      if (!p.grad().defined()) continue;
      Item it;
      it.p = p;
      it.index = index;
      it.name = index < int64_t(names_.size()) ? names_[index] : "param" + std::to_string(index);
      it.opt = &o;
      it.g = p.grad().data();
      if (o.weight_decay() != 0) it.g = it.g.add(p.data(), o.weight_decay());
      it.compressor = o.compressor();
      it.density = density_override_ > 0 ? density_override_ : o.density();
      if (it.density <= 0 && it.compressor) it.density = it.compressor->default_density();
      it.error_feedback = o.error_feedback();
      for (const auto& rule : o.rules()) {
        if (!glob_match(rule.match, it.name)) continue;
        if (rule.compressor) {
          it.compressor = rule.compressor;
          if (density_override_ <= 0 && o.density() <= 0) it.density = rule.compressor->default_density();
        }
        if (rule.density > 0 && density_override_ <= 0) it.density = rule.density;
        if (rule.error_feedback >= 0) it.error_feedback = rule.error_feedback == 1;
        if (rule.dense) it.forced_dense = true;
      }
      items.push_back(std::move(it));
    }
  }

  // 2. Non-finite gradients: all ranks error, or all ranks skip. Nothing has changed yet.
  if (nonfinite_skip(items)) {  // leave every state untouched, the step count too
    st.step = step_;
    st.skipped = true;
    last_ = st;
    total_.add(st);
    return loss;
  }
  ++step_;

  // 3. Route each tensor (decided once, logged once), then compress locally.
  // On an accelerator the compressors only enqueue work: compress_ms is timed to its completion
  // (the current stream synchronised before and after), or it would be the launch overhead
  // alone. nonfinite_skip's .item() has just waited on the device, so the first wait is free;
  // the second costs one round trip per step.
  std::optional<c10::Device> accelerator;
  for (const auto& it : items)
    if (!it.p.is_cpu()) {
      accelerator = it.p.device();
      break;
    }
  auto wait_for_device = [&] {
    if (accelerator) c10::impl::VirtualGuardImpl(accelerator->type()).getStream(*accelerator).synchronize();
  };
  wait_for_device();
  auto t_compress = Clock::now();
  std::vector<Item*> sparse, shared, dense;
  for (auto& it : items) {
    std::string reason;
    Route r = route_for(it, reason);
    auto known = routes_.find(it.name);
    if (known == routes_.end() || known->second != r) {
      routes_[it.name] = r;
      routing_log_.push_back({it.name, r, reason});
    }
    it.route = r;
    it.state = &state_for(it.p);
    st.elements_in += it.p.numel();
    st.bytes_dense_equivalent += int64_t(double(it.p.numel() * int64_t(it.p.element_size())) *
                                         (W > 1 ? 2.0 * (W - 1) / W : 1.0));
    (r == Route::Dense ? dense : r == Route::Sparse ? sparse : shared).push_back(&it);
  }

  const auto& d = defaults_options();
  const bool dgc = d.momentum_mode() == "dgc";
  auto compress_one = [&](Item& it) {
    const auto& o = *it.opt;
    CompressContext ctx;
    ctx.step = step_;
    ctx.param_index = it.index;
    ctx.param_name = it.name;
    ctx.seed = static_cast<uint64_t>(o.seed());
    ctx.ratio = it.density;
    at::Tensor source = it.g;
    if (dgc && o.momentum() != 0) {
      // Deep Gradient Compression, Lin et al. 2018, §3.2 "momentum correction":
      //   u_t = m·u_{t−1} + g_t            (local velocity)
      //   v_t = v_{t−1} + u_t              (accumulated in the residual below)
      // Nesterov variant: v_t = v_{t−1} + (m·u_t + g_t).
      at::Tensor& u = it.state->momentum_buffer();
      if (!u.defined()) it.state->momentum_buffer(at::zeros_like(it.p));
      it.state->momentum_buffer().mul_(o.momentum()).add_(it.g);
      source = o.nesterov() ? it.g.add(it.state->momentum_buffer(), o.momentum()) : it.state->momentum_buffer();
    }
    if (it.error_feedback) {
      if (!it.state->residual().defined()) it.state->residual(at::zeros_like(it.p, at::MemoryFormat::Contiguous));
      at::Tensor residual = it.state->residual();
      it.sent = it.compressor->compress_with_feedback(source, residual, ctx);  // residual = acc − D(sent)
    } else {
      it.sent = it.compressor->compress(source, ctx);
    }
    if (dgc && o.momentum() != 0 && it.sent.count() > 0) {
      // DGC §3.2 "momentum factor masking": u_t ← u_t ⊙ ¬mask, so that stale momentum of the
      // coordinates just sent does not keep pushing them.
      it.state->momentum_buffer().view(-1).index_fill_(0, it.sent.indices.to(at::kLong), 0);
    }
    st.elements_sent += it.sent.count();
  };

  // Error feedback in units of the current lr (Options::residual_lr_scaling): a residual
  // written at lr' is multiplied by lr'/lr before it is read, so lr·residual — the parameter
  // change still owed — survives a schedule step. lr = 0 (the end of a cosine schedule) leaves
  // it alone: nothing is applied at that lr anyway.
  for (auto& it : items) {
    if (it.route == Route::Dense || !it.error_feedback || !it.opt->residual_lr_scaling()) continue;
    CompressedSGDParamState& s = *it.state;
    const double lr = it.opt->lr();
    if (lr <= 0) continue;
    if (s.residual().defined() && s.residual_lr() > 0 && s.residual_lr() != lr) s.residual().mul_(s.residual_lr() / lr);
    s.residual_lr(lr);
  }

  // scope = "model": one selection over all compressible gradients flattened together.
  std::vector<Item> model_item;  // holds the virtual whole-model parameter when used
  if (d.scope() == "model" && !sparse.empty()) {
    std::vector<at::Tensor> gs, rs;
    for (Item* it : sparse) {
      gs.push_back(it->g.reshape(-1));
      if (!it->state->residual().defined()) it->state->residual(at::zeros_like(it->p, at::MemoryFormat::Contiguous));
      rs.push_back(it->state->residual().view(-1));
    }
    Item whole;
    whole.g = at::cat(gs);
    whole.p = whole.g;
    whole.name = "<model>";
    whole.index = -1;
    whole.opt = sparse.front()->opt;
    whole.compressor = sparse.front()->compressor;
    whole.density = sparse.front()->density;
    whole.error_feedback = sparse.front()->error_feedback;
    CompressedSGDParamState whole_state;
    if (whole.error_feedback) whole_state.residual(at::cat(rs));
    whole.state = &whole_state;
    TORCH_CHECK(!(dgc && whole.opt->momentum() != 0), "scope \"model\" with momentum needs momentum_mode \"global\" "
                "(DGC's momentum correction is kept per tensor)");
    compress_one(whole);
    if (whole.error_feedback) {  // scatter the whole-model residual back into each parameter's
      int64_t off = 0;
      for (Item* it : sparse) {
        it->state->residual().view(-1).copy_(whole_state.residual().narrow(0, off, it->p.numel()));
        off += it->p.numel();
      }
    }
    model_item.push_back(std::move(whole));
    sparse.assign({&model_item.front()});
  } else {
    for (Item* it : sparse) compress_one(*it);
  }
  for (Item* it : shared) compress_one(*it);
  for (Item* it : dense) st.elements_sent += it->p.numel();
  st.compressed_tensors = int64_t(sparse.size() + shared.size());
  st.dense_tensors = int64_t(dense.size());
  wait_for_device();
  st.compress_ms = ms_since(t_compress);

  // 4. Exchange: average over ranks.
  GradientExchange& exchange = *exchange_;
  // The sparse apply below needs a plain CPU parameter, and an update that is the average
  // itself: momentum already applied locally ("dgc"), and no whole-model split.
  auto applies_sparsely = [&](const Item& it) {
    const auto t = it.p.scalar_type();
    return dgc && model_item.empty() && it.p.is_cpu() && it.p.is_contiguous() &&
           (t == at::kFloat || t == at::kDouble) && it.sent.dtype == t &&
           (!it.sent.values.defined() || it.sent.values.is_cpu());  // what the exchange coalesces
  };
  auto slots_of = [&](std::vector<Item*>& group, bool keep_zero) {
    std::vector<SparseSlot> slots;
    for (Item* it : group) {
      // Reused from step to step: a fresh tensor would be page-faulted in on every step
      // (~100 ms for 25M floats), more than the sparse exchange itself costs. On the sparse
      // route it also stays zero between steps outside the entries last written (its state).
      AverageBuffer& buffer = average_buffers_[it->name];
      const bool coalesced = applies_sparsely(*it);  // sparse and shared routes alike
      if (!coalesced) {  // the exchange writes the dense average; a coalesced one needs no tensor
        const auto opts = it->sent.values.options();
        if (!buffer.tensor.defined() || buffer.tensor.numel() != it->sent.numel ||
            buffer.tensor.scalar_type() != opts.dtype().toScalarType() || buffer.tensor.device() != opts.device()) {
          buffer.zeros.reset();
          buffer.tensor = at::empty({it->sent.numel}, opts);
        }
        if (!keep_zero) buffer.zeros.reset();  // average_shared writes all of it
        it->average = buffer.tensor;
      }
      cddp::SparseSlot slot{&it->sent, it->compressor.get(), &it->average,
                            keep_zero && !coalesced ? &buffer.zeros : nullptr};
      // Fixed-k compressors at a density every rank shares select the same number of entries
      // everywhere: the exchange can skip gathering the counts.
      if (it->compressor->default_density() > 0 && it->density > 0)
        slot.expected_count = k_for_ratio(it->density, it->sent.numel);
      if (coalesced) {
        slot.coalesced = &buffer.coalesced;
        it->coalesced = &buffer.coalesced;
      }
      slots.push_back(slot);
    }
    return slots;
  };
  auto sparse_slots = slots_of(sparse, true);
  exchange.average_sparse(sparse_slots, st);
  auto shared_slots = slots_of(shared, false);
  exchange.average_shared(shared_slots, st);
  std::vector<at::Tensor> dense_grads;
  for (Item* it : dense) {
    // Averaged in place: never in the user's .grad itself.
    if (W > 1 && it->g.is_alias_of(it->p.grad())) it->g = it->g.clone();  // .data() is a new TensorImpl: compare storage
    dense_grads.push_back(it->g);
  }
  exchange.average_dense(dense_grads, st);
  for (size_t i = 0; i < dense.size(); ++i) dense[i]->average = dense_grads[i];
  if (!model_item.empty()) {  // split the whole-model average back into parameters
    int64_t off = 0;
    for (auto& it : items)
      if (it.route == Route::Sparse) {
        it.average = model_item.front().average.narrow(0, off, it.p.numel());
        off += it.p.numel();
      }
  }

  // 5. Apply, exactly as torch::optim::SGD does for "global" momentum (and dense tensors).
  //    A coalesced average updates only the entries it lists: p −= lr·avg at the others is
  //    p + (−lr)·(+0), which leaves every value, ±0 included, as it is.
  for (auto& it : items) {
    const auto& o = *it.opt;
    if (it.coalesced) {
      TORCH_INTERNAL_ASSERT(it.coalesced->valid, "the exchange did not coalesce '", it.name, "'");
      add_sparse_(it.p.data(), *it.coalesced, -o.lr());
      continue;
    }
    at::Tensor d_p = it.average.view(it.p.sizes());
    const bool local_momentum = dgc && it.route != Route::Dense;
    if (o.momentum() != 0 && !local_momentum) {
      at::Tensor buf = it.state->momentum_buffer();
      if (!buf.defined()) {
        buf = at::clone(d_p).detach();
        it.state->momentum_buffer(buf);
      } else {
        buf.mul_(o.momentum()).add_(d_p, 1 - o.dampening());
      }
      d_p = o.nesterov() ? d_p.add(buf, o.momentum()) : buf;
    }
    it.p.data().add_(d_p, -1 * o.lr());
  }

  if (d.track_residual_norm()) {
    double sq = 0;
    for (auto& it : items)
      if (it.state->residual().defined()) sq += it.state->residual().to(at::kDouble).pow(2).sum().item<double>();
    st.residual_norm = std::sqrt(sq);
  }
  last_ = st;
  total_.add(st);
  return loss;
}

// ---------------------------------------------------------------- serialization

void CompressedSGD::save(torch::serialize::OutputArchive& archive) const {
  serialize(*this, archive);
  archive.write("cddp_format_version", c10::IValue(kFormatVersion));
  archive.write("cddp_step", c10::IValue(step_));
}

void CompressedSGD::load(torch::serialize::InputArchive& archive) {
  c10::IValue version;
  TORCH_CHECK(archive.try_read("cddp_format_version", version),
              "not a CompressedSGD state (no cddp_format_version): refusing to load it");
  TORCH_CHECK(version.toInt() == kFormatVersion, "CompressedSGD state has format version ", version.toInt(),
              ", this build reads version ", kFormatVersion);
  // Options hold objects that are not data (compressor, communicator, rules): keep ours.
  std::vector<CompressedSGDOptions> live;
  for (auto& group : param_groups_) live.push_back(static_cast<CompressedSGDOptions&>(group.options()));
  serialize(*this, archive);
  for (size_t i = 0; i < param_groups_.size() && i < live.size(); ++i) {
    auto& o = static_cast<CompressedSGDOptions&>(param_groups_[i].options());
    o.compressor(live[i].compressor()).communicator(live[i].communicator()).rules(live[i].rules());
    o.nonfinite(live[i].nonfinite()).min_numel(live[i].min_numel()).compress_1d(live[i].compress_1d());
    o.auto_dense(live[i].auto_dense()).track_residual_norm(live[i].track_residual_norm());
    o.index_coding(live[i].index_coding());
  }
  c10::IValue step;
  TORCH_CHECK(archive.try_read("cddp_step", step), "CompressedSGD state has no step count");
  step_ = step.toInt();
}

}  // namespace cddp
