# CddpTorch.cmake — finds LibTorch (1.13 from Debian, or 2.x from a pip wheel) and exposes
# it as the target cddp::torch. Sets CDDP_TORCH_HAS_CUDA when torch_cuda/c10_cuda exist.
find_package(Torch REQUIRED CONFIG)
if(NOT TARGET cddp_torch)
  add_library(cddp_torch INTERFACE)
  add_library(cddp::torch ALIAS cddp_torch)
  target_link_libraries(cddp_torch INTERFACE ${TORCH_LIBRARIES})
  # TORCH_CXX_FLAGS carries -D_GLIBCXX_USE_CXX11_ABI=...; everything we build must agree.
  separate_arguments(_cddp_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(cddp_torch INTERFACE ${_cddp_torch_flags})
endif()
set(CDDP_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR TARGET c10_cuda)
  set(CDDP_TORCH_HAS_CUDA ON)
endif()
message(STATUS "cddp: LibTorch ${Torch_VERSION} (CUDA: ${CDDP_TORCH_HAS_CUDA})")
