// payload_buffers.cpp — PayloadBuffers: one tensor's buffers, reallocated only when the shape,
// dtype or device changes (payload_buffers.h).
#include "payload_buffers.h"

#include <ATen/ATen.h>

namespace cddp::detail {

at::Tensor& PayloadBuffers::sized(at::Tensor& buffer, c10::IntArrayRef sizes, const at::TensorOptions& options) {
  const bool fits = buffer.defined() && buffer.sizes() == sizes && buffer.is_contiguous() &&
                    buffer.scalar_type() == c10::typeMetaToScalarType(options.dtype()) &&
                    buffer.device() == options.device() && buffer.use_count() == 1;
  if (!fits) buffer = at::empty(sizes, options.memory_format(at::MemoryFormat::Contiguous));
  return buffer;
}

}  // namespace cddp::detail
