// Masked routing (MMA-MRNNet, section 3.2; definitions in docs/design.md): the CUDA kernels,
// the plan that sizes their grids, and the host functions that launch them.
//
// How it is tested and where it stands. This one source is compiled two ways: by nvcc into
// masked_routing_cuda.cu (the GPU), and by a C++ compiler against cuda_emulator.h, which runs
// the same kernels on the CPU (backend "cuda_emulator"; the self-test emulator_selftest.cpp).
// On every commit, without a GPU: the whole law suite of tests/test_routing.py runs through the
// emulator on shapes that need several blocks of every kernel, the emulator's racecheck and
// barrier checks watch every block, the self-test runs under ThreadSanitizer and
// AddressSanitizer, planted bugs must be caught (tests/test_cuda_emulator.py), and nvcc must
// compile this file (tests/test_extension_build.py). On a GPU (python -m mmarnn_min.gpucheck):
// the same laws on CUDA tensors, a CUDA-graph capture, compute-sanitizer memcheck and racecheck,
// and the benchmark's bandwidth. Until a GPU run is recorded in docs/experiments.md, the speed
// claims below are estimates, and the real hardware's behaviour (warp scheduling, memory
// ordering across blocks) is untested.
//
// The op. View h as (B, K) with K = T*D and weight as (F, K); video b's real values are
// h[b, k < K_b] with K_b = lengths[b] * D.
//   forward       out[b, f]    = bias[f] + sum_{k < K_b} weight[f, k] h[b, k]
//   grad_h        grad_h[b, k] = sum_f grad_out[b, f] weight[f, k]       if k < K_b, else 0
//   grad_weight   grad_w[f, k] = sum_{b : k < K_b} grad_out[b, f] h[b, k]
// No kernel reads h[b, k >= K_b] (NaN there cannot leak) and no host code reads lengths: the
// kernels clamp every length into [0, T] before using it, so no access can leave the tensors,
// and assert it was in range (a device-side assert: the error surfaces at the next sync).
// Grids are sized from shapes alone, so the op can be captured in a CUDA graph.
//
// Roofline (H100/H200: ~3.35/4.8 TB/s HBM, 132 SMs, ~67 TFLOP/s FP32 without tensor cores).
// Paper shape T = 480, D = 128, F = 32 (K = 61,440), lengths uniform in [T/4, T] (5/8 of the
// frames real on average), float32:
//   forward   reads the real part of h (B * 5/8 * K * 4 B) and the used weight columns
//             (F * K * 4 B = 7.9 MB): B = 4: 8.5 MB, 1.8 us at 4.8 TB/s (two launches cost
//             more than that); B = 256: 47 MB, 10 us, and 0.63 GFLOP, 9 us of FMA at peak:
//             at B = 256 the FMA units matter as much as memory.
//   backward  reads h and weight again, writes all of grad_h (B * K * 4 B) and grad_weight:
//             B = 256: 118 MB, 25 us, and 1.26 GFLOP, 19 us of FMA.
// So the kernels (1) read h's real values, the weight and grad_out once each, coalesced along
// k; (2) spread the work over hundreds of blocks at B = 4 as at B = 256; (3) keep the FMA units
// fed from registers, not shared memory; (4) reduce in a fixed order (deterministic).
//
// Design.
//   forward_partial_kernel  grid (video tiles of 64, K slices, feature tiles of 32); 128 threads.
//     Split-K: each block multiplies its (64 videos x slice) part of h by the (slice x 32
//     features) part of weight^T, 32 columns at a time through shared memory, each thread
//     accumulating a 4 x 4 register tile (16 FMA per 8 shared loads). The slice width is
//     chosen from the shapes so that the grid has about two blocks per SM whatever B is
//     (plan_forward). Consecutive blocks share a slice, so the weight comes from L2 after the
//     first tile of videos (the whole weight, 7.9 MB, fits in L2). A block whose 64 videos all
//     end before its slice returns at once; the others stop at their longest video. Each
//     block writes its partial sums to partial[slice, b, f] (float32 or float64).
//   forward_reduce_kernel   one thread per (b, f): bias + the partial sums of the slices video
//     b reaches, in slice order (so the result does not depend on the launch order).
//   backward_kernel         grid (K / 128 columns, F / 32 feature chunks); 128 threads, one
//     column k each. A thread keeps weight[f0:f0+32, k] and its 32 grad_weight sums in
//     registers and walks the batch, 32 videos' grad_out rows at a time staged in shared memory
//     (read back as broadcasts): per real (b, k) it reads h[b, k] once and does 64 FMA (32 for
//     grad_h, 32 for grad_weight). So weight, h and grad_out are read once and grad_h and
//     grad_weight written once, all coalesced. The loads of h for 4 videos are issued before
//     the arithmetic that uses them: at ~128 registers a thread (ptxas, sm_90) only 4 blocks
//     fit an SM, and one load in flight per warp would leave HBM mostly idle. The chunk f0 = 0
//     writes grad_h (exact zeros on padding); for F > 32 it adds the other features' terms
//     reading them from global memory (a slower path: the paper's F is 32). A block of columns
//     no video reaches writes zeros.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>

#define MR_KERNEL_ASSERT(condition, message) CUDA_KERNEL_ASSERT((condition) && message)
#define MR_LAUNCH(kernel, grid, block, shared_bytes, ...)                                        \
  do {                                                                                           \
    kernel<<<grid, block, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__);       \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                              \
  } while (0)

// ``count`` elements of T at ``offset_bytes`` into the block's dynamic shared memory (the
// emulator's version checks bounds and races; here it is a pointer).
template <typename T>
__device__ __forceinline__ T* dynamic_shared_array(const char*, size_t offset_bytes, int64_t) {
  extern __shared__ __align__(16) unsigned char dynamic_shared_memory[];
  return reinterpret_cast<T*>(dynamic_shared_memory + offset_bytes);
}
#else
#include "cuda_emulator.h"
#endif

namespace mmarnn_min {
namespace kernels {

// float32 sums for float32, float16 and bfloat16 values; float64 for float64.
template <typename T>
struct Accumulate {
  using type = float;
};
template <>
struct Accumulate<double> {
  using type = double;
};

struct Shape {
  int64_t batch;          // B
  int64_t frames;         // T
  int64_t width;          // D
  int64_t features;       // F
  int64_t columns;        // K = T * D: h is (B, K) with rows K apart, grad_weight (F, K)
  int64_t weight_stride;  // elements between rows of weight: K, or more for a column slice
};

template <typename T>
__host__ __device__ __forceinline__ T mr_min(T a, T b) { return a < b ? a : b; }
template <typename T>
__host__ __device__ __forceinline__ T mr_max(T a, T b) { return a < b ? b : a; }
__host__ __device__ __forceinline__ int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }

// K_b = lengths[b] * D, with lengths[b] clamped into [0, T] so that nothing is read out of
// bounds even before the assert is reported.
__device__ __forceinline__ int64_t real_columns(const int64_t* lengths, int64_t b, const Shape& s) {
  const int64_t length = lengths[b];
  MR_KERNEL_ASSERT(length >= 0 && length <= s.frames, "masked_routing: every length must lie in [0, T]");
  return mr_min(mr_max(length, int64_t(0)), s.frames) * s.width;
}

// ---- forward ----------------------------------------------------------------------------------
constexpr int kForwardThreads = 128;  // 16 x 8 threads, each 4 videos x 4 features
constexpr int kTileVideos = 64;
constexpr int kTileFeatures = 32;
constexpr int kStep = 32;                           // columns staged in shared memory at a time
constexpr int kVideoPitch = kTileVideos + 4;        // row pitch of h_tile: +4 spreads a warp's
constexpr int kFeaturePitch = kTileFeatures + 4;    // column-wise stores over more banks
constexpr int kReduceThreads = 256;

struct ForwardPlan {
  int64_t video_tiles, feature_tiles, slices, slice_columns;
};

// Slices of K wide enough that the grid holds about two blocks per multiprocessor.
inline ForwardPlan plan_forward(const Shape& s, int multiprocessors) {
  ForwardPlan plan;
  plan.video_tiles = ceil_div(s.batch, kTileVideos);
  plan.feature_tiles = ceil_div(s.features, kTileFeatures);
  const int64_t tiles = mr_max<int64_t>(1, plan.video_tiles * plan.feature_tiles);
  const int64_t wanted_slices = mr_max<int64_t>(1, ceil_div(2 * int64_t(multiprocessors), tiles));
  int64_t width = ceil_div(ceil_div(s.columns, wanted_slices), kStep) * kStep;
  width = mr_max<int64_t>(width, ceil_div(ceil_div(s.columns, 65535), kStep) * kStep);  // gridDim.y <= 65535
  plan.slice_columns = mr_max<int64_t>(width, kStep);
  plan.slices = ceil_div(s.columns, plan.slice_columns);
  return plan;
}

template <typename scalar_t>
constexpr size_t forward_shared_bytes() {
  using acc_t = typename Accumulate<scalar_t>::type;
  return sizeof(acc_t) * kStep * (kVideoPitch + kFeaturePitch) + sizeof(int64_t) * kTileVideos;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kForwardThreads)
forward_partial_kernel(const scalar_t* __restrict__ h, const int64_t* __restrict__ lengths,
                       const scalar_t* __restrict__ weight, typename Accumulate<scalar_t>::type* __restrict__ partial,
                       Shape s, int64_t slice_columns) {
  using acc_t = typename Accumulate<scalar_t>::type;
  const size_t w_offset = sizeof(acc_t) * kStep * kVideoPitch;
  const size_t k_offset = w_offset + sizeof(acc_t) * kStep * kFeaturePitch;
  auto h_tile = dynamic_shared_array<acc_t>("h_tile", 0, kStep * kVideoPitch);               // [kk][i]: h[b0+i, k0+kk]
  auto w_tile = dynamic_shared_array<acc_t>("w_tile", w_offset, kStep * kFeaturePitch);      // [kk][j]: weight[f0+j, k0+kk]
  auto k_real = dynamic_shared_array<int64_t>("k_real", k_offset, kTileVideos);              // K_b of the tile's videos

  const int tid = threadIdx.x, tx = tid % 8, ty = tid / 8;  // features 4tx..4tx+3, videos 4ty..4ty+3
  const int64_t b0 = int64_t(blockIdx.x) * kTileVideos, slice = blockIdx.y;
  const int64_t f0 = int64_t(blockIdx.z) * kTileFeatures;
  const int64_t k_begin = slice * slice_columns, k_end = mr_min(k_begin + slice_columns, s.columns);

  for (int i = tid; i < kTileVideos; i += kForwardThreads)
    k_real[i] = b0 + i < s.batch ? real_columns(lengths, b0 + i, s) : int64_t(0);
  __syncthreads();
  int64_t tile_reach = 0;
  for (int i = 0; i < kTileVideos; ++i) tile_reach = mr_max<int64_t>(tile_reach, k_real[i]);
  if (tile_reach <= k_begin) return;  // every video of the tile ends before this slice (the whole block returns)
  const int64_t k_stop = mr_min(k_end, tile_reach);

  acc_t acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_stop; k0 += kStep) {
    for (int e = tid; e < kStep * kTileVideos; e += kForwardThreads) {  // a warp reads 32 consecutive k of one video
      const int kk = e % kStep, i = e / kStep;
      const int64_t k = k0 + kk, k_video = k_real[i];
      h_tile[kk * kVideoPitch + i] = k < k_stop && k < k_video ? acc_t(h[(b0 + i) * s.columns + k]) : acc_t(0);
    }
    for (int e = tid; e < kStep * kTileFeatures; e += kForwardThreads) {
      const int kk = e % kStep, j = e / kStep;
      const int64_t k = k0 + kk, f = f0 + j;
      w_tile[kk * kFeaturePitch + j] = k < k_stop && f < s.features ? acc_t(weight[f * s.weight_stride + k]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < kStep; ++kk) {
      acc_t a[4], w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = h_tile[kk * kVideoPitch + 4 * ty + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] = w_tile[kk * kFeaturePitch + 4 * tx + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * w[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t b = b0 + 4 * ty + i;
    for (int j = 0; j < 4; ++j) {
      const int64_t f = f0 + 4 * tx + j;
      if (b < s.batch && f < s.features) partial[(slice * s.batch + b) * s.features + f] = acc[i][j];
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kReduceThreads)
forward_reduce_kernel(const typename Accumulate<scalar_t>::type* __restrict__ partial,
                      const int64_t* __restrict__ lengths, const scalar_t* __restrict__ bias,
                      scalar_t* __restrict__ out, Shape s, int64_t slice_columns) {
  using acc_t = typename Accumulate<scalar_t>::type;
  const int64_t index = int64_t(blockIdx.x) * kReduceThreads + threadIdx.x;  // b * F + f
  if (index >= s.batch * s.features) return;
  const int64_t b = index / s.features, f = index % s.features;
  const int64_t k_b = real_columns(lengths, b, s);
  acc_t sum = 0;
  for (int64_t slice = 0; slice * slice_columns < k_b; ++slice) sum += partial[(slice * s.batch + b) * s.features + f];
  if (bias != nullptr) sum += acc_t(bias[f]);
  out[index] = scalar_t(sum);
}

template <typename scalar_t>
void launch_forward(const scalar_t* h, const int64_t* lengths, const scalar_t* weight, const scalar_t* bias,
                    scalar_t* out, typename Accumulate<scalar_t>::type* partial, const Shape& s,
                    const ForwardPlan& plan) {
  if (s.batch == 0 || s.features == 0) return;
  if (s.columns > 0) {
    const dim3 grid(unsigned(plan.video_tiles), unsigned(plan.slices), unsigned(plan.feature_tiles));
    MR_LAUNCH(forward_partial_kernel<scalar_t>, grid, dim3(kForwardThreads), forward_shared_bytes<scalar_t>(), h,
              lengths, weight, partial, s, plan.slice_columns);
  }
  const dim3 grid(unsigned(ceil_div(s.batch * s.features, kReduceThreads)));
  MR_LAUNCH(forward_reduce_kernel<scalar_t>, grid, dim3(kReduceThreads), 0, partial, lengths, bias, out, s,
            plan.slice_columns);
}

// ---- backward ---------------------------------------------------------------------------------
constexpr int kBackwardThreads = 128;  // one column k per thread
constexpr int kChunkFeatures = 32;     // features per block, in registers
constexpr int kStageVideos = 32;       // grad_out rows staged in shared memory at a time
constexpr int kVideosInFlight = 4;     // loads of h issued before the arithmetic that uses them

template <typename scalar_t>
constexpr size_t backward_shared_bytes() {
  using acc_t = typename Accumulate<scalar_t>::type;
  return sizeof(acc_t) * kStageVideos * kChunkFeatures + sizeof(int64_t) * kStageVideos;
}

// grad_h == nullptr: grad_h is not wanted; grad_weight == nullptr: grad_weight is not wanted.
// grad_weight is contiguous (F, K).
template <typename scalar_t>
__global__ void __launch_bounds__(kBackwardThreads)
backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ h,
                const int64_t* __restrict__ lengths, const scalar_t* __restrict__ weight,
                scalar_t* __restrict__ grad_h, scalar_t* __restrict__ grad_weight, Shape s) {
  using acc_t = typename Accumulate<scalar_t>::type;
  const size_t k_offset = sizeof(acc_t) * kStageVideos * kChunkFeatures;
  auto g = dynamic_shared_array<acc_t>("g", 0, kStageVideos * kChunkFeatures);      // [i][j]: grad_out[b0+i, f0+j]
  auto k_real = dynamic_shared_array<int64_t>("k_real", k_offset, kStageVideos);    // K_b of the staged videos

  const int tid = threadIdx.x;
  const int64_t block_begin = int64_t(blockIdx.x) * kBackwardThreads, k = block_begin + tid;
  const int64_t f0 = int64_t(blockIdx.y) * kChunkFeatures;
  const bool in_range = k < s.columns;
  const bool writes_grad_h = grad_h != nullptr && blockIdx.y == 0;  // chunk 0 sums over every feature
  const bool writes_grad_weight = grad_weight != nullptr;

  int64_t reach = 0;  // how far the longest video reaches (every thread computes the same)
  for (int64_t b = 0; b < s.batch; ++b) reach = mr_max(reach, real_columns(lengths, b, s));
  if (block_begin >= reach) {  // no video reaches these columns: zero gradients, nothing to read
    if (in_range) {
      if (writes_grad_h)
        for (int64_t b = 0; b < s.batch; ++b) grad_h[b * s.columns + k] = scalar_t(0);
      if (writes_grad_weight)
        for (int j = 0; j < kChunkFeatures && f0 + j < s.features; ++j) grad_weight[(f0 + j) * s.columns + k] = scalar_t(0);
    }
    return;
  }

  const bool reached = in_range && k < reach;
  acc_t w[kChunkFeatures], acc[kChunkFeatures];
#pragma unroll
  for (int j = 0; j < kChunkFeatures; ++j) {
    w[j] = writes_grad_h && reached && f0 + j < s.features ? acc_t(weight[(f0 + j) * s.weight_stride + k]) : acc_t(0);
    acc[j] = 0;
  }
  for (int64_t b0 = 0; b0 < s.batch; b0 += kStageVideos) {
    const int staged = int(mr_min<int64_t>(kStageVideos, s.batch - b0));
    for (int e = tid; e < kStageVideos * kChunkFeatures; e += kBackwardThreads) {
      const int i = e / kChunkFeatures, j = e % kChunkFeatures;
      g[e] = i < staged && f0 + j < s.features ? acc_t(grad_out[(b0 + i) * s.features + f0 + j]) : acc_t(0);
    }
    for (int i = tid; i < kStageVideos; i += kBackwardThreads)
      k_real[i] = i < staged ? real_columns(lengths, b0 + i, s) : int64_t(0);
    __syncthreads();
    for (int i0 = 0; i0 < staged; i0 += kVideosInFlight) {
      bool real[kVideosInFlight];
      acc_t x[kVideosInFlight];  // h[b, k] of the next videos: their loads are in flight together
#pragma unroll
      for (int u = 0; u < kVideosInFlight; ++u) {
        const int i = i0 + u;
        real[u] = in_range && i < staged && k < int64_t(k_real[i]);
        x[u] = real[u] && writes_grad_weight ? acc_t(h[(b0 + i) * s.columns + k]) : acc_t(0);
      }
#pragma unroll
      for (int u = 0; u < kVideosInFlight; ++u) {
        const int i = i0 + u;
        const int64_t b = b0 + i;
        if (writes_grad_h && in_range && i < staged) {
          acc_t sum = 0;
          if (real[u]) {
#pragma unroll
            for (int j = 0; j < kChunkFeatures; ++j) sum += g[i * kChunkFeatures + j] * w[j];
            for (int64_t f = kChunkFeatures; f < s.features; ++f)  // F > 32 only
              sum += acc_t(grad_out[b * s.features + f]) * acc_t(weight[f * s.weight_stride + k]);
          }
          grad_h[b * s.columns + k] = scalar_t(sum);  // exactly 0 on padding
        }
        if (writes_grad_weight && real[u]) {
#pragma unroll
          for (int j = 0; j < kChunkFeatures; ++j) acc[j] += g[i * kChunkFeatures + j] * x[u];
        }
      }
    }
    __syncthreads();
  }
  if (writes_grad_weight && in_range)
    for (int j = 0; j < kChunkFeatures && f0 + j < s.features; ++j) grad_weight[(f0 + j) * s.columns + k] = scalar_t(acc[j]);
}

// Needs K > 0 and F > 0 (the callers fill the trivial cases themselves).
template <typename scalar_t>
void launch_backward(const scalar_t* grad_out, const scalar_t* h, const int64_t* lengths, const scalar_t* weight,
                     scalar_t* grad_h, scalar_t* grad_weight, const Shape& s) {
  const int64_t chunks = grad_weight != nullptr ? ceil_div(s.features, kChunkFeatures) : 1;
  const dim3 grid(unsigned(ceil_div(s.columns, kBackwardThreads)), unsigned(chunks));
  MR_LAUNCH(backward_kernel<scalar_t>, grid, dim3(kBackwardThreads), backward_shared_bytes<scalar_t>(), grad_out, h,
            lengths, weight, grad_h, grad_weight, s);
}

}  // namespace kernels
}  // namespace mmarnn_min
