// Masked routing (MMA-MRNNet, section 3.2): the CUDA operators. The kernels, their design and
// the roofline estimate are in routing_kernels.cuh; the host code around them (checks,
// outputs, dtype dispatch) is kernel_ops.h, which the CPU emulator build shares.
//
// How it is tested and where it stands: see routing_kernels.cuh. In short: compiled by nvcc
// and executed through the emulator on every commit; on a GPU only by python -m
// mmarnn_min.gpucheck (whose table goes into docs/experiments.md when a GPU is lent).
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>

#include "kernel_ops.h"

namespace mmarnn_min {
namespace {

// The device's SM count, asked of the runtime once per device, so that later calls (inside a
// CUDA-graph capture, say) make no query.
int multiprocessors(const at::Tensor& t) {
  static std::mutex mutex;
  static std::unordered_map<int, int> counts;
  const std::lock_guard<std::mutex> lock(mutex);
  const int device = t.device().index();
  if (counts.count(device) == 0) {
    int count = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    counts[device] = count;
  }
  return counts[device];
}

at::Tensor masked_routing_cuda(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(h.is_cuda(), "masked_routing: this kernel is for CUDA tensors but h is on ", h.device());
  const c10::cuda::CUDAGuard guard(h.device());
  return kernels_forward(h, lengths, weight, bias, c10::DeviceType::CUDA, multiprocessors(h));
}

std::tuple<at::Tensor, at::Tensor> masked_routing_backward_cuda(const at::Tensor& grad_out, const at::Tensor& h,
                                                                const at::Tensor& lengths, const at::Tensor& weight,
                                                                std::array<bool, 2> output_mask) {
  TORCH_CHECK(h.is_cuda(), "masked_routing: this kernel is for CUDA tensors but h is on ", h.device());
  const c10::cuda::CUDAGuard guard(h.device());
  return kernels_backward(grad_out, h, lengths, weight, output_mask, c10::DeviceType::CUDA);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmarnn_min, CUDA, m) {
  m.impl("masked_routing", &masked_routing_cuda);
  m.impl("masked_routing_backward", &masked_routing_backward_cuda);
}

}  // namespace mmarnn_min
