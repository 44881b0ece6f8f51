// Masked routing (MMA-MRNNet, section 3.2): CUDA kernels, launched on the current stream.
//
// View h as (B, K) with K = T*D and weight as (F, K). Video b's real values are h[b, k < K_b],
// K_b = lengths[b] * D; no kernel ever reads h[b, k >= K_b] (so NaN or inf in the padding cannot
// leak), and nothing past K_max = max_b K_b is read from weight.
//
//   forward         out[b, f]    = bias[f] + sum_{k < K_b} weight[f, k] h[b, k]
//                   split over k: each block multiplies a (64 videos x K-slice) tile of h by the
//                   (K-slice x 32 features) tile of weight^T through shared memory and writes a
//                   partial sum; a second kernel adds the slices in a fixed order (deterministic).
//   grad_h          grad_h[b, k] = sum_f grad_out[b, f] weight[f, k]  if k < K_b, else 0
//   grad_weight     grad_w[f, k] = sum_{b : k < K_b} grad_out[b, f] h[b, k]   (0 for k >= K_max)
//
// These are memory-bound: each kernel reads h (or writes grad_h) once, coalesced along k.
#include "masked_routing.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // (ATen/cuda/CUDAContext.h would also need the cuSPARSE headers)

namespace mmarnn_min {
namespace {

// ---- forward -------------------------------------------------------------------------------
constexpr int kTileB = 64;     // videos per block
constexpr int kTileF = 32;     // features per block
constexpr int kStepK = 32;     // k per shared-memory step
constexpr int kSliceK = 2048;  // k per block (split-K); a multiple of kStepK
constexpr int kForwardThreads = 256;  // 16 x 16 threads, each 4 videos x 2 features

template <typename scalar_t>
__global__ void forward_partial_kernel(const scalar_t* __restrict__ h, const int64_t* __restrict__ lengths,
                                       const scalar_t* __restrict__ weight, scalar_t* __restrict__ partial,
                                       int64_t batch, int64_t features, int64_t k_total, int64_t width,
                                       int64_t k_used) {
  __shared__ scalar_t h_tile[kStepK][kTileB + 1];   // h[b0 + i, k0 + kk] at [kk][i]
  __shared__ scalar_t w_tile[kStepK][kTileF + 1];   // weight[f0 + j, k0 + kk] at [kk][j]
  __shared__ int64_t k_real[kTileB];                 // K_b of this block's videos (0 past the batch)
  __shared__ int64_t tile_end;                       // where this block's work ends

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t slice = blockIdx.x, b0 = int64_t(blockIdx.y) * kTileB, f0 = int64_t(blockIdx.z) * kTileF;
  const int64_t k_begin = slice * kSliceK, k_end = min(k_begin + kSliceK, k_used);

  for (int i = tid; i < kTileB; i += kForwardThreads) k_real[i] = b0 + i < batch ? lengths[b0 + i] * width : 0;
  __syncthreads();
  if (tid == 0) {
    int64_t longest = 0;
    for (int i = 0; i < kTileB; ++i) longest = max(longest, k_real[i]);
    tile_end = min(longest, k_end);
  }
  __syncthreads();

  scalar_t acc[4][2] = {};
  for (int64_t k0 = k_begin; k0 < tile_end; k0 += kStepK) {
    for (int e = tid; e < kStepK * kTileB; e += kForwardThreads) {  // coalesced along k
      const int kk = e % kStepK, i = e / kStepK;
      const int64_t b = b0 + i, k = k0 + kk;
      h_tile[kk][i] = (k < k_end && k < k_real[i]) ? h[b * k_total + k] : scalar_t(0);
    }
    for (int e = tid; e < kStepK * kTileF; e += kForwardThreads) {
      const int kk = e % kStepK, j = e / kStepK;
      const int64_t f = f0 + j, k = k0 + kk;
      w_tile[kk][j] = (f < features && k < k_end) ? weight[f * k_total + k] : scalar_t(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kStepK; ++kk) {
      scalar_t a[4], w[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = h_tile[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 2; ++j) w[j] = w_tile[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) acc[i][j] += a[i] * w[j];
    }
    __syncthreads();
  }
  // partial is (slices, B, F); every block writes its whole tile, zeros where it skipped work
  for (int i = 0; i < 4; ++i) {
    const int64_t b = b0 + ty + 16 * i;
    for (int j = 0; j < 2; ++j) {
      const int64_t f = f0 + tx + 16 * j;
      if (b < batch && f < features) partial[(slice * batch + b) * features + f] = acc[i][j];
    }
  }
}

template <typename scalar_t>
__global__ void forward_reduce_kernel(const scalar_t* __restrict__ partial, const scalar_t* __restrict__ bias,
                                      scalar_t* __restrict__ out, int64_t slices, int64_t batch, int64_t features) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // b * F + f
  if (index >= batch * features) return;
  scalar_t sum = bias != nullptr ? bias[index % features] : scalar_t(0);
  for (int64_t s = 0; s < slices; ++s) sum += partial[s * batch * features + index];
  out[index] = sum;
}

// ---- backward ------------------------------------------------------------------------------
constexpr int kBackwardThreads = 256;  // one k per thread
constexpr int kVideosPerThread = 8;    // grad_h: each thread serves 8 videos at its k
constexpr int kFeaturesPerThread = 32; // grad_weight: each thread serves 32 features at its k
constexpr int kVideosPerStage = 64;    // grad_weight: grad_out rows staged in shared memory

template <typename scalar_t>
__global__ void grad_h_kernel(const scalar_t* __restrict__ grad_out, const int64_t* __restrict__ lengths,
                              const scalar_t* __restrict__ weight, scalar_t* __restrict__ grad_h,
                              int64_t batch, int64_t features, int64_t k_total, int64_t width) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  scalar_t* g = reinterpret_cast<scalar_t*>(shared_bytes);  // (kVideosPerThread, F)
  const int64_t k = int64_t(blockIdx.x) * kBackwardThreads + threadIdx.x;
  const int64_t b0 = int64_t(blockIdx.y) * kVideosPerThread;
  for (int64_t e = threadIdx.x; e < kVideosPerThread * features; e += kBackwardThreads) {
    const int64_t b = b0 + e / features;
    g[e] = b < batch ? grad_out[b * features + e % features] : scalar_t(0);
  }
  __syncthreads();
  if (k >= k_total) return;

  bool real[kVideosPerThread];
  bool any_real = false;
#pragma unroll
  for (int s = 0; s < kVideosPerThread; ++s) {
    real[s] = b0 + s < batch && k < lengths[b0 + s] * width;
    any_real |= real[s];
  }
  scalar_t acc[kVideosPerThread] = {};
  if (any_real) {
    for (int64_t f = 0; f < features; ++f) {
      const scalar_t w = weight[f * k_total + k];
#pragma unroll
      for (int s = 0; s < kVideosPerThread; ++s) acc[s] += g[s * features + f] * w;
    }
  }
#pragma unroll
  for (int s = 0; s < kVideosPerThread; ++s)
    if (b0 + s < batch) grad_h[(b0 + s) * k_total + k] = real[s] ? acc[s] : scalar_t(0);
}

template <typename scalar_t>
__global__ void grad_weight_kernel(const scalar_t* __restrict__ grad_out, const int64_t* __restrict__ lengths,
                                   const scalar_t* __restrict__ h, scalar_t* __restrict__ grad_weight,
                                   int64_t batch, int64_t features, int64_t k_total, int64_t width,
                                   int64_t k_used) {
  __shared__ scalar_t g[kVideosPerStage][kFeaturesPerThread];  // grad_out[b0 + i, f0 + j]
  __shared__ int64_t k_real[kVideosPerStage];                  // K_b of the staged videos
  const int64_t k = int64_t(blockIdx.x) * kBackwardThreads + threadIdx.x;
  const int64_t f0 = int64_t(blockIdx.y) * kFeaturesPerThread;

  scalar_t acc[kFeaturesPerThread] = {};
  for (int64_t b0 = 0; b0 < batch; b0 += kVideosPerStage) {
    const int64_t staged = min(int64_t(kVideosPerStage), batch - b0);
    for (int e = threadIdx.x; e < kVideosPerStage * kFeaturesPerThread; e += kBackwardThreads) {
      const int i = e / kFeaturesPerThread, j = e % kFeaturesPerThread;
      g[i][j] = (i < staged && f0 + j < features) ? grad_out[(b0 + i) * features + f0 + j] : scalar_t(0);
    }
    for (int i = threadIdx.x; i < kVideosPerStage; i += kBackwardThreads)
      k_real[i] = i < staged ? lengths[b0 + i] * width : 0;
    __syncthreads();
    if (k < k_used) {
#pragma unroll 4
      for (int i = 0; i < staged; ++i) {
        if (k < k_real[i]) {
          const scalar_t x = h[(b0 + i) * k_total + k];
#pragma unroll
          for (int j = 0; j < kFeaturesPerThread; ++j) acc[j] += g[i][j] * x;
        }
      }
    }
    __syncthreads();
  }
  if (k >= k_used) return;
#pragma unroll
  for (int j = 0; j < kFeaturesPerThread; ++j)
    if (f0 + j < features) grad_weight[(f0 + j) * k_total + k] = acc[j];
}

int64_t blocks_for(int64_t n, int64_t per_block) { return (n + per_block - 1) / per_block; }

at::Tensor masked_routing_cuda(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CUDA);
  check_bias(bias, h, weight.size(0));
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t longest = checked_longest_length(lengths, h.size(1));
  const int64_t batch = h.size(0), width = h.size(2), features = weight.size(0), k_total = weight.size(1);
  at::Tensor out = at::empty({batch, features}, h.options());  // (B, F)
  if (batch == 0 || features == 0) return out;

  const int64_t k_used = longest * width;
  const int64_t slices = std::max<int64_t>(1, blocks_for(k_used, kSliceK));
  at::Tensor partial = at::empty({slices, batch, features}, h.options());  // (slices, B, F)
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "masked_routing_cuda", [&] {
    const dim3 grid(slices, blocks_for(batch, kTileB), blocks_for(features, kTileF));
    forward_partial_kernel<scalar_t><<<grid, kForwardThreads, 0, stream>>>(
        h.data_ptr<scalar_t>(), lengths.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
        partial.data_ptr<scalar_t>(), batch, features, k_total, width, k_used);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    forward_reduce_kernel<scalar_t><<<blocks_for(batch * features, 256), 256, 0, stream>>>(
        partial.data_ptr<scalar_t>(), bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr,
        out.data_ptr<scalar_t>(), slices, batch, features);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> masked_routing_backward_cuda(const at::Tensor& grad_out, const at::Tensor& h,
                                                                const at::Tensor& lengths, const at::Tensor& weight) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CUDA);
  check_grad_out(grad_out, h, weight.size(0));
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t longest = checked_longest_length(lengths, h.size(1));
  const int64_t batch = h.size(0), width = h.size(2), features = weight.size(0), k_total = weight.size(1);
  at::Tensor grad_h = at::empty_like(h);            // (B, T, D)
  at::Tensor grad_weight = at::empty_like(weight);  // (F, T*D)
  if (k_total == 0) return {grad_h, grad_weight};
  if (batch == 0 || features == 0) return {grad_h.zero_(), grad_weight.zero_()};

  const int64_t k_used = longest * width;
  grad_weight.slice(1, k_used).zero_();  // frames no video reaches
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "masked_routing_backward_cuda", [&] {
    const dim3 grid_h(blocks_for(k_total, kBackwardThreads), blocks_for(batch, kVideosPerThread));
    const size_t shared = kVideosPerThread * features * sizeof(scalar_t);
    TORCH_CHECK(shared <= 48 * 1024, "masked_routing: F = ", features, " is too large for the CUDA kernel");
    grad_h_kernel<scalar_t><<<grid_h, kBackwardThreads, shared, stream>>>(
        grad_out.data_ptr<scalar_t>(), lengths.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
        grad_h.data_ptr<scalar_t>(), batch, features, k_total, width);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (k_used > 0) {
      const dim3 grid_w(blocks_for(k_used, kBackwardThreads), blocks_for(features, kFeaturesPerThread));
      grad_weight_kernel<scalar_t><<<grid_w, kBackwardThreads, 0, stream>>>(
          grad_out.data_ptr<scalar_t>(), lengths.data_ptr<int64_t>(), h.data_ptr<scalar_t>(),
          grad_weight.data_ptr<scalar_t>(), batch, features, k_total, width, k_used);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_h, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmarnn_min, CUDA, m) {
  m.impl("masked_routing", &masked_routing_cuda);
  m.impl("masked_routing_backward", &masked_routing_backward_cuda);
}

}  // namespace mmarnn_min
