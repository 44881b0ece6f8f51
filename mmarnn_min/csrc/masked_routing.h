// Masked routing (MMA-MRNNet, section 3.2): shared declarations and input checks.
//
//   out[b] = bias + sum_{t < lengths[b]} weight[:, t*D:(t+1)*D] @ h[b, t]
//
// h (B, T, D) float/double, lengths (B,) int64 in [0, T], weight (F, T*D), bias (F,) or none.
// Every check below runs before a kernel touches memory and names the argument it rejects.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

namespace mmarnn_min {

inline void check_same_place(const at::Tensor& t, const at::Tensor& h, const char* name) {
  TORCH_CHECK(t.scalar_type() == h.scalar_type(), "masked_routing: ", name, " has dtype ",
              t.scalar_type(), " but h has dtype ", h.scalar_type());
  TORCH_CHECK(t.device() == h.device(), "masked_routing: ", name, " is on ", t.device(),
              " but h is on ", h.device());
  TORCH_CHECK(t.is_contiguous(), "masked_routing: ", name, " must be contiguous");
}

// Checks shapes, dtypes, devices and contiguity of the operator's tensor arguments.
inline void check_routing_args(const at::Tensor& h, const at::Tensor& lengths,
                               const at::Tensor& weight, c10::DeviceType device_type) {
  TORCH_CHECK(h.dim() == 3, "masked_routing: h must be (B, T, D), got shape ", h.sizes());
  TORCH_CHECK(h.scalar_type() == at::kFloat || h.scalar_type() == at::kDouble,
              "masked_routing: h must be float32 or float64, got ", h.scalar_type());
  TORCH_CHECK(h.device().type() == device_type, "masked_routing: this kernel is for ",
              device_type, " tensors but h is on ", h.device());
  TORCH_CHECK(h.is_contiguous(), "masked_routing: h must be contiguous");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == h.size(0),
              "masked_routing: lengths must be (B,) = (", h.size(0), ",), got shape ", lengths.sizes());
  TORCH_CHECK(lengths.scalar_type() == at::kLong, "masked_routing: lengths must be int64, got ",
              lengths.scalar_type());
  TORCH_CHECK(lengths.device() == h.device(), "masked_routing: lengths is on ", lengths.device(),
              " but h is on ", h.device());
  TORCH_CHECK(lengths.is_contiguous(), "masked_routing: lengths must be contiguous");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == h.size(1) * h.size(2),
              "masked_routing: weight must be (F, T*D) = (F, ", h.size(1) * h.size(2),
              "), got shape ", weight.sizes());
  check_same_place(weight, h, "weight");
}

inline void check_bias(const c10::optional<at::Tensor>& bias, const at::Tensor& h, int64_t features) {
  if (!bias.has_value()) return;
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == features,
              "masked_routing: bias must be (F,) = (", features, ",), got shape ", bias->sizes());
  check_same_place(*bias, h, "bias");
}

inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& h, int64_t features) {
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == h.size(0) && grad_out.size(1) == features,
              "masked_routing_backward: grad_out must be (B, F) = (", h.size(0), ", ", features,
              "), got shape ", grad_out.sizes());
  check_same_place(grad_out, h, "grad_out");
}

// Checks 0 <= lengths[b] <= T and returns the longest length (0 for an empty batch).
// On CUDA this reads two numbers back to the host: the launch needs the longest length anyway.
inline int64_t checked_longest_length(const at::Tensor& lengths, int64_t frames) {
  if (lengths.numel() == 0) return 0;
  auto [shortest, longest] = at::aminmax(lengths);
  const at::Tensor bounds = at::stack({shortest, longest}).cpu();  // one transfer from a GPU
  const int64_t lo = bounds[0].item<int64_t>();
  const int64_t hi = bounds[1].item<int64_t>();
  TORCH_CHECK(lo >= 0, "masked_routing: every length must lie in [0, T] = [0, ", frames, "], got ", lo);
  TORCH_CHECK(hi <= frames, "masked_routing: every length must lie in [0, T] = [0, ", frames, "], got ", hi);
  return hi;
}

}  // namespace mmarnn_min
