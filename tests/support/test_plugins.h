// test_plugins.h — shared helpers for tests that load the in-tree plugins from the build tree.
#pragma once

#include <cddp/plugin_loader.h>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace cddp::testing {

// A loader that searches only the build tree's plugin directory.
inline PluginLoader build_tree_loader() {
  return PluginLoader(PluginSearchPath::standard({CDDP_TEST_PLUGIN_DIR}, nullptr));
}

// Runs f, which must throw; returns the message (c10::Error without backtrace).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

// Integer tensor (any integer dtype) as a std::vector<int64_t>.
inline std::vector<int64_t> to_vec(const at::Tensor& t) {
  at::Tensor l = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
}

}  // namespace cddp::testing
