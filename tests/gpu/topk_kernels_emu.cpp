// topk_kernels_emu.cpp — compiles the real topk_kernels.cu as C++ on top of cuda_emu.h, so that
// topk_kernels_emu_test runs the exact kernel code on a machine without a GPU.
#ifndef CDDP_CUDA_EMULATION
#define CDDP_CUDA_EMULATION 1
#endif
#include "topk_kernels.cu"
