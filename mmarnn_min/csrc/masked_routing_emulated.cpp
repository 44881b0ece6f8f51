// Masked routing: the CUDA kernels of routing_kernels.cuh executed on the CPU by the emulation
// layer of cuda_emulator.h, as the operators mmarnn_min::masked_routing_emulated and
// masked_routing_emulated_backward on CPU tensors (backend "cuda_emulator" in Python). Slow
// (one OS thread per CUDA thread), and there to prove the kernels without a GPU.
//
// How it is tested and where it stands: tests/test_routing.py holds it to every law the other
// backends obey, on shapes that need several blocks of every kernel; tests/test_cuda_emulator.py
// tests the emulator itself. It runs on every commit, on the CPU.
#include "kernel_ops.h"

namespace mmarnn_min {
namespace {

// A small device: the test shapes then already need several K slices per video tile.
constexpr int kEmulatedMultiprocessors = 4;

at::Tensor masked_routing_emulated(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                                   const c10::optional<at::Tensor>& bias) {
  try {
    return kernels_forward(h, lengths, weight, bias, c10::DeviceType::CPU, kEmulatedMultiprocessors);
  } catch (const cuda_emulator::LaunchError& error) {
    TORCH_CHECK(false, "cuda_emulator: ", error.what());
  }
}

std::tuple<at::Tensor, at::Tensor> masked_routing_emulated_backward(const at::Tensor& grad_out, const at::Tensor& h,
                                                                    const at::Tensor& lengths, const at::Tensor& weight,
                                                                    std::array<bool, 2> output_mask) {
  try {
    return kernels_backward(grad_out, h, lengths, weight, output_mask, c10::DeviceType::CPU);
  } catch (const cuda_emulator::LaunchError& error) {
    TORCH_CHECK(false, "cuda_emulator: ", error.what());
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(mmarnn_min, CPU, m) {
  m.impl("masked_routing_emulated", &masked_routing_emulated);
  m.impl("masked_routing_emulated_backward", &masked_routing_emulated_backward);
}

}  // namespace mmarnn_min
