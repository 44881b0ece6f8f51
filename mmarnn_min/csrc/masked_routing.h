// Masked routing (MMA-MRNNet, section 3.2): the checks every operator runs on its arguments.
//
//   out[b] = bias + sum_{t < lengths[b]} weight[:, t*D:(t+1)*D] @ h[b, t]
//
// h (B, T, D) float64, float32, float16 or bfloat16, contiguous; lengths (B,) int64 in [0, T];
// weight (F, T*D) of h's dtype with contiguous rows (a column slice of a wider matrix is fine:
// rows may lie further apart); bias (F,) or none. Every check here looks at shapes, dtypes and
// devices only, runs before a kernel touches memory, and names the argument it rejects. The
// lengths' values are checked where they can be read without waiting for a GPU: by the CPU
// kernels on the host, by the CUDA kernels on the device.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

namespace mmarnn_min {

inline bool supported_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16;
}

inline void check_same_place(const at::Tensor& t, const at::Tensor& h, const char* name) {
  TORCH_CHECK(t.scalar_type() == h.scalar_type(), "masked_routing: ", name, " has dtype ", t.scalar_type(),
              " but h has dtype ", h.scalar_type());
  TORCH_CHECK(t.device() == h.device(), "masked_routing: ", name, " is on ", t.device(), " but h is on ", h.device());
}

inline void check_routing_args(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                               c10::DeviceType device_type) {
  TORCH_CHECK(h.dim() == 3, "masked_routing: h must be (B, T, D), got shape ", h.sizes());
  TORCH_CHECK(supported_dtype(h.scalar_type()),
              "masked_routing: h must be float64, float32, float16 or bfloat16, got ", h.scalar_type());
  TORCH_CHECK(h.device().type() == device_type, "masked_routing: this kernel is for ", device_type,
              " tensors but h is on ", h.device());
  TORCH_CHECK(h.is_contiguous(), "masked_routing: h must be contiguous");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == h.size(0), "masked_routing: lengths must be (B,) = (",
              h.size(0), ",), got shape ", lengths.sizes());
  TORCH_CHECK(lengths.scalar_type() == at::kLong, "masked_routing: lengths must be int64, got ",
              lengths.scalar_type());
  TORCH_CHECK(lengths.device() == h.device(), "masked_routing: lengths is on ", lengths.device(), " but h is on ",
              h.device());
  TORCH_CHECK(lengths.is_contiguous(), "masked_routing: lengths must be contiguous");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == h.size(1) * h.size(2), "masked_routing: weight must be (F, T*D) = (F, ",
              h.size(1) * h.size(2), "), got shape ", weight.sizes());
  check_same_place(weight, h, "weight");
  TORCH_CHECK(weight.size(1) <= 1 || weight.stride(1) == 1,
              "masked_routing: weight's rows must be contiguous (stride 1 along T*D), got strides ", weight.strides());
  TORCH_CHECK(weight.size(0) <= 1 || weight.stride(0) >= weight.size(1),
              "masked_routing: weight's rows must not overlap, got strides ", weight.strides());
}

inline void check_bias(const c10::optional<at::Tensor>& bias, const at::Tensor& h, int64_t features) {
  if (!bias.has_value()) return;
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == features, "masked_routing: bias must be (F,) = (", features,
              ",), got shape ", bias->sizes());
  check_same_place(*bias, h, "bias");
  TORCH_CHECK(bias->is_contiguous(), "masked_routing: bias must be contiguous");
}

inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& h, int64_t features) {
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == h.size(0) && grad_out.size(1) == features,
              "masked_routing_backward: grad_out must be (B, F) = (", h.size(0), ", ", features, "), got shape ",
              grad_out.sizes());
  check_same_place(grad_out, h, "grad_out");
  TORCH_CHECK(grad_out.is_contiguous(), "masked_routing_backward: grad_out must be contiguous");
}

}  // namespace mmarnn_min
