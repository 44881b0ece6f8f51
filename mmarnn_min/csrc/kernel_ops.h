// Masked routing: the operators around the kernels of routing_kernels.cuh (argument checks,
// outputs and workspace, dtype dispatch, the trivial shapes), shared by the GPU build
// (masked_routing_cuda.cu) and the emulator build (masked_routing_emulated.cpp), so the
// emulator runs the host code a GPU runs, not a copy of it.
#pragma once

#include <array>
#include <tuple>

#include "masked_routing.h"
#include "routing_kernels.cuh"

namespace mmarnn_min {

inline kernels::Shape shape_of(const at::Tensor& h, const at::Tensor& weight) {
  const int64_t columns = h.size(1) * h.size(2);
  return kernels::Shape{h.size(0), h.size(1), h.size(2), weight.size(0), columns,
                        weight.size(0) > 1 ? weight.stride(0) : columns};
}

inline at::ScalarType accumulate_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_grid_fits(const kernels::Shape& s) {
  TORCH_CHECK(kernels::ceil_div(s.features, kernels::kTileFeatures) <= 65535,
              "masked_routing: F = ", s.features, " is more than the CUDA kernels' grid holds (65535 * 32)");
}

// out (B, F); `multiprocessors` sizes the grid (plan_forward).
inline at::Tensor kernels_forward(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, c10::DeviceType device_type,
                                  int multiprocessors) {
  check_routing_args(h, lengths, weight, device_type);
  check_bias(bias, h, weight.size(0));
  const kernels::Shape s = shape_of(h, weight);
  check_grid_fits(s);
  const kernels::ForwardPlan plan = kernels::plan_forward(s, multiprocessors);
  at::Tensor out = at::empty({s.batch, s.features}, h.options());
  const int64_t partial_size = s.columns > 0 ? plan.slices * s.batch * s.features : 0;
  at::Tensor partial = at::empty({partial_size}, h.options().dtype(accumulate_dtype(h.scalar_type())));  // (slices, B, F)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "masked_routing_kernels", [&] {
    using acc_t = typename kernels::Accumulate<scalar_t>::type;
    kernels::launch_forward<scalar_t>(h.data_ptr<scalar_t>(), lengths.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
                                      bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
                                      partial.data_ptr<acc_t>(), s, plan);
  });
  return out;
}

// (grad_h (B, T, D), grad_weight (F, T*D)); an output that output_mask does not ask for is an
// empty tensor and is not computed.
inline std::tuple<at::Tensor, at::Tensor> kernels_backward(const at::Tensor& grad_out, const at::Tensor& h,
                                                           const at::Tensor& lengths, const at::Tensor& weight,
                                                           std::array<bool, 2> output_mask,
                                                           c10::DeviceType device_type) {
  check_routing_args(h, lengths, weight, device_type);
  check_grad_out(grad_out, h, weight.size(0));
  const kernels::Shape s = shape_of(h, weight);
  check_grid_fits(s);
  at::Tensor grad_h = output_mask[0] ? at::empty_like(h) : at::empty({0}, h.options());
  at::Tensor grad_weight = output_mask[1] ? at::empty({s.features, s.columns}, h.options()) : at::empty({0}, h.options());
  if (s.columns == 0) return {grad_h, grad_weight};  // nothing to compute: both are empty
  if (s.features == 0) return {grad_h.zero_(), grad_weight};  // grad_h sums over no features
  if (!output_mask[0] && !output_mask[1]) return {grad_h, grad_weight};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "masked_routing_backward_kernels", [&] {
    kernels::launch_backward<scalar_t>(grad_out.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                       lengths.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
                                       output_mask[0] ? grad_h.data_ptr<scalar_t>() : nullptr,
                                       output_mask[1] ? grad_weight.data_ptr<scalar_t>() : nullptr, s);
  });
  return {grad_h, grad_weight};
}

}  // namespace mmarnn_min
