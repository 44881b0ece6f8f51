// Masked routing (MMA-MRNNet, section 3.2): the operators' schemas, their CPU kernels and the
// rule that runs them under autocast.
//
//   forward   out[b]        = bias + sum_{t < L_b} W_t @ h[b, t]           W_t = weight[:, t*D:(t+1)*D]
//   backward  grad_h[b, t]  = W_t^T @ grad_out[b]            if t < L_b, else exactly 0
//             grad_W_t      = sum_{b : t < L_b} grad_out[b] (x) h[b, t]  (exactly 0 when no b reaches t)
//   (grad_bias = sum_b grad_out[b] is one line of Python in mmarnn_min/extension.py.)
//
// How it is tested and where it stands: tests/test_routing.py holds these kernels to the
// reference loop (mmarnn_min.routing.masked_routing_reference) and to every law of
// docs/design.md, in float64, float32, float16 and bfloat16, with opcheck, gradcheck and
// torch.compile; `python -m mmarnn_min.bench --only routing` times them against the plain
// PyTorch fallback. Both run on every commit, on the CPU.
//
// How the CPU kernels work. View h as (B, K) with K = T*D, weight as (F, K); video b's real
// values are h[b, k < K_b], K_b = L_b * D. The K columns are cut into blocks of 2048; each block
// is one work item, and its share of each product is done by register tiles of SIMD sums, so
// that each value loaded serves several FMA. A SIMD value is one register (kLanes = 16 float32
// with AVX-512, 8 with AVX2, 4 with SSE2); the shapes below are AVX-512's (Tiles: the others
// have 2 vectors and 2 videos where these have 4):
//
//   forward      4 videos x 4 features, lane-wise: acc[b][f][j] += h[b, k+j] * weight[f, k+j],
//                kLanes columns a step while all 4 videos pass (accumulate_dots_tile), then
//                each video on to its end (accumulate_dots); the lanes added up at the end
//   grad_h       4 videos x 64 columns, over the F features:
//                acc[b][j] += grad_out[b, f] * weight[f, k+j]                  (accumulate_tile)
//   grad_weight  4 features x 64 columns, over the videos that reach them:
//                acc[f][j] += grad_out[b, f] * h[b, k+j]                       (accumulate_tile)
//
// Each value moved meets only F multiply-adds, so memory traffic matters as much as the tiles:
// the backward's outputs (B*T*D and F*T*D values, the padding's zeros included) are written
// with non-temporal stores, which skip reading each line into cache before it is overwritten,
// and the rows that a tile reads far apart from one another are prefetched one tile ahead.
//
// The videos are visited from longest to shortest, so the videos that reach a column are a
// prefix of that order. h and weight are read where they lie, never copied (kLanes values at a
// time are converted for float16 and bfloat16, and a video's last, partial ones are copied so that no
// value of the padding is ever read). Each block's forward sums go to their own partial sums,
// added in block order, and each video's sums run in a fixed order, so the output depends
// neither on which thread took which block nor on the other videos of the batch (bit for bit).
//
// Threads. Each call opens at most ONE parallel region on torch's intra-op threads and hands
// the blocks out one at a time to whichever thread is free (a call too small to share runs on
// the calling thread alone). Many small BLAS calls that each open their own parallel region make
// every thread wait for the slowest at every call, and a thread that another process has
// descheduled then stalls them all, call after call: beside a second PyTorch job the op became
// many times slower than the fallback. And a BLAS call made inside a parallel region is slow too
// (the BLAS library's threads meet torch's). So there is no BLAS here: the tiles are a dozen
// lines, compiled for AVX-512, AVX2 and baseline x86-64 (cpu_kind picks one at the first call;
// MMARNN_CPU_KERNELS picks a lower one), and the library is built with -fopenmp, without which at::parallel_for runs
// on one thread.
//
// float16 and bfloat16: values are converted to float32 as they are read, the sums run in
// float32, and each output is rounded once.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "masked_routing.h"

#if defined(__x86_64__)
#include <immintrin.h>  // _mm_stream_si128, _mm_sfence: SSE2, in every x86-64 compilation
#endif

#include <cstdlib>  // getenv

// The kernels are compiled once for each kind of x86-64 CPU below (GCC's target attribute),
// and one compilation is picked when first called (cpu_kind).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MR_PER_CPU_KIND 1
#define MR_TARGET(isa) __attribute__((target(isa)))
#else
#define MR_PER_CPU_KIND 0
#define MR_TARGET(isa)
#endif
#define MR_INLINE inline __attribute__((always_inline))

namespace mmarnn_min {
namespace {

constexpr int64_t kBlockColumns = 2048;  // columns per work item: its weight (F x 2048) stays in cache
constexpr int kTileRows = 4;

// The tiles' shapes for one kind of CPU, so that a tile's sums fit its registers. A SIMD value
// is kLanes numbers, one register of float32 (GCC splits a wider one into pieces that go
// through memory at every step: AVX2 with 16 lanes was slower than the plain PyTorch fallback).
// The backward's tiles are 4 rows x kVectors * kLanes columns, the forward's kVideos videos x 4
// features.
template <int kLanes_, int kVectors_, int kVideos_>
struct Tiles {
  static constexpr int kLanes = kLanes_;
  static constexpr int kVectors = kVectors_;
  static constexpr int64_t kColumns = kVectors * kLanes;
  static constexpr int kVideos = kVideos_;
};
using Avx512Tiles = Tiles<16, 4, 4>;   // zmm: 16 sums + 4 values of the 32 registers
using Avx2Tiles = Tiles<8, 2, 2>;      // ymm: 8 sums + 4 values of the 16 registers
using BaselineTiles = Tiles<4, 2, 2>;  // xmm (SSE2): the same, of its 16 registers

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// kLanes numbers as one SIMD value (GCC's vector extension).
template <typename T, int kLanes>
struct LanesOf {
  typedef T type __attribute__((vector_size(kLanes * sizeof(T))));
};
template <typename T, int kLanes>
using Lanes = typename LanesOf<T, kLanes>::type;

// The number of numbers in the SIMD value type V.
template <typename V>
constexpr int kLanesOf = sizeof(V) / sizeof(std::declval<V>()[0]);

// The n (at most kLanes) values at p, converted to V's numbers, then zeros: nothing past them is
// read. The common case (all kLanes values) is one vector load, or a widening for bfloat16.
template <typename V, typename scalar_t>
MR_INLINE V load_lanes(const scalar_t* p, int64_t n = kLanesOf<V>) {
  using acc_t = std::remove_reference_t<decltype(std::declval<V>()[0])>;
  constexpr int kLanes = kLanesOf<V>;
  V v;
  if (n >= kLanes) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      std::memcpy(&v, p, sizeof v);
      return v;
    } else if constexpr (std::is_same_v<scalar_t, at::BFloat16>) {  // a bfloat16 is a float's upper 16 bits
      Lanes<uint16_t, kLanes> bits;
      std::memcpy(&bits, p, sizeof bits);
      const auto widened = __builtin_convertvector(bits, Lanes<uint32_t, kLanes>) << 16;
      std::memcpy(&v, &widened, sizeof v);
      return v;
    }
  }
  acc_t values[kLanes];
  for (int j = 0; j < kLanes; ++j) values[j] = j < n ? static_cast<acc_t>(p[j]) : acc_t(0);
  std::memcpy(&v, values, sizeof v);
  return v;
}

// Writes the first n (at most kLanes) lanes of v at p, converted to scalar_t.
template <typename scalar_t, typename V>
MR_INLINE void store_lanes(scalar_t* p, const V& v, int64_t n = kLanesOf<V>) {
  using acc_t = std::remove_reference_t<decltype(std::declval<V>()[0])>;
  constexpr int kLanes = kLanesOf<V>;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (n >= kLanes) {
      std::memcpy(p, &v, sizeof v);
      return;
    }
  }
  acc_t values[kLanes];
  std::memcpy(values, &v, sizeof v);
  for (int j = 0; j < kLanes && j < n; ++j) p[j] = static_cast<scalar_t>(values[j]);
}

// Writes the first n (at most kLanes) lanes of v at p, as store_lanes does, but all of them at
// a 16-byte aligned p with non-temporal stores (on x86, when they fill whole 16-byte pieces):
// the backward's outputs (B*T*D and F*T*D values, read by nothing in this op) then go to memory
// without each line being read into cache first, which halves their memory traffic. Whoever
// wrote with it calls store_fence before the results are read.
template <typename scalar_t, typename V>
MR_INLINE void stream_lanes(scalar_t* p, const V& v, int64_t n) {
  constexpr int kLanes = kLanesOf<V>;
#if defined(__x86_64__)
  if constexpr (kLanes * sizeof(scalar_t) % 16 == 0) {
    if (n >= kLanes && reinterpret_cast<uintptr_t>(p) % 16 == 0) {
      scalar_t values[kLanes];
      store_lanes(values, v);
      const char* from = reinterpret_cast<const char*>(values);
      char* to = reinterpret_cast<char*>(p);
      for (size_t i = 0; i < sizeof values; i += 16)
        _mm_stream_si128(reinterpret_cast<__m128i*>(to + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i)));
      return;
    }
  }
#endif
  store_lanes(p, v, n);
}

// Exact zeros in p[0:n]: to a 16-byte boundary one at a time, then a SIMD value at a time by
// stream_lanes.
template <typename V, typename scalar_t>
MR_INLINE void stream_zeros(scalar_t* p, int64_t n) {
  const V zeros = {};
  int64_t k = 0;
  for (; k < n && reinterpret_cast<uintptr_t>(p + k) % 16 != 0; ++k) p[k] = scalar_t(0);
  for (; k < n; k += kLanesOf<V>) stream_lanes(p + k, zeros, n - k);
}

// Asks for the cache lines (64 bytes) of p[0:n] to be fetched, one request a line (a prefetch
// never faults, so p may run past the data).
template <typename scalar_t>
MR_INLINE void prefetch_lines(const scalar_t* p, int64_t n) {
  for (int64_t k = 0; k < n; k += 64 / sizeof(scalar_t)) __builtin_prefetch(p + k);
}

MR_INLINE void store_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

// (An element at a time: `= {}` on the array makes GCC clear it in memory.)
template <typename V, int kRows, int kColumns>
MR_INLINE void zero(V (&acc)[kRows][kColumns]) {
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kColumns; ++c) acc[r][c] = V{};
}

// acc[r][v] += sum_{p < steps} row(r, p) * vector(p, v), r < 4, v < kVectors: 4 x kLanes*kVectors
// sums, 4*kVectors vector FMA per step for kVectors vector loads and 4 numbers (row(r, p) is one
// number, vector(p, v) a SIMD value). Each sum runs over p in order, whatever kVectors is.
template <typename V, int kVectors, typename Row, typename Vector>
MR_INLINE void accumulate_tile(int64_t steps, const Row& row, const Vector& vector, V (&acc)[kTileRows][kVectors]) {
  for (int64_t p = 0; p < steps; ++p) {
    V v[kVectors];
    for (int c = 0; c < kVectors; ++c) v[c] = vector(p, c);
    for (int r = 0; r < kTileRows; ++r) {
      const auto x = row(r, p);
      for (int c = 0; c < kVectors; ++c) acc[r][c] += x * v[c];
    }
  }
}

// acc[r] += x[k:k+kLanes] * w[r][k:k+kLanes] lane by lane for k from `start` (a multiple of
// kLanes) to n: 4 dot products of x with the 4 rows w[r], whose lanes the caller adds up.
template <typename V, typename scalar_t>
MR_INLINE void accumulate_dots(int64_t start, int64_t n, const scalar_t* x, const scalar_t* const* w,
                               V (&acc)[kTileRows]) {
  constexpr int kLanes = kLanesOf<V>;
  int64_t k = start;
  for (; k + kLanes <= n; k += kLanes) {
    const V xk = load_lanes<V>(x + k);
    for (int r = 0; r < kTileRows; ++r) acc[r] += xk * load_lanes<V>(w[r] + k);
  }
  if (k < n) {  // the last, partial SIMD value
    const V xk = load_lanes<V>(x + k, n - k);
    for (int r = 0; r < kTileRows; ++r) acc[r] += xk * load_lanes<V>(w[r] + k, n - k);
  }
}

// acc[r][s] += x[r][k:k+kLanes] * w[s][k:k+kLanes] lane by lane for k < n (a multiple of
// kLanes): the dot products of kVideos videos with 4 weight rows, 4*kVideos FMA per 4+kVideos
// vector loads, each lane summed in the same order as accumulate_dots sums it.
template <typename V, int kVideos, typename scalar_t>
MR_INLINE void accumulate_dots_tile(int64_t n, const scalar_t* const* x, const scalar_t* const* w,
                                    V (&acc)[kVideos][kTileRows]) {
  for (int64_t k = 0; k < n; k += kLanesOf<V>) {
    V wk[kTileRows];
    for (int s = 0; s < kTileRows; ++s) wk[s] = load_lanes<V>(w[s] + k);
    for (int r = 0; r < kVideos; ++r) {
      const V xk = load_lanes<V>(x[r] + k);
      for (int s = 0; s < kTileRows; ++s) acc[r][s] += xk * wk[s];
    }
  }
}

// The batch's geometry, read from the lengths (host memory: there is no device to wait for),
// which are all checked before anything else is touched.
struct Batch {
  int64_t size, frames, width, features, columns;  // B, T, D, F, K = T*D
  int64_t weight_stride;                           // elements between rows of weight
  std::vector<int64_t> order;                      // batch index of the i-th longest video
  std::vector<int64_t> reach;                      // reach[i] = K_b of video order[i] (descending)
  int64_t blocks() const { return (columns + kBlockColumns - 1) / kBlockColumns; }
  // Multiply-adds of the forward: each real value of h meets F weights.
  int64_t forward_work() const {
    int64_t real = 0;
    for (int64_t r : reach) real += r;
    return real * features;
  }
  // How many videos (a prefix of `order`) reach column k.
  int64_t reaching(int64_t k) const {
    return std::upper_bound(reach.begin(), reach.end(), k, [](int64_t column, int64_t r) { return column >= r; }) -
           reach.begin();
  }
};

Batch read_batch(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight) {
  Batch batch{h.size(0), h.size(1), h.size(2), weight.size(0), h.size(1) * h.size(2),
              weight.size(0) > 1 ? weight.stride(0) : h.size(1) * h.size(2), {}, {}};
  const int64_t* len = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch.size; ++b)
    TORCH_CHECK(len[b] >= 0 && len[b] <= batch.frames, "masked_routing: every length must lie in [0, T] = [0, ",
                batch.frames, "], got ", len[b]);
  batch.order.resize(batch.size);
  std::iota(batch.order.begin(), batch.order.end(), 0);
  std::stable_sort(batch.order.begin(), batch.order.end(), [len](int64_t a, int64_t b) { return len[a] > len[b]; });
  for (int64_t b : batch.order) batch.reach.push_back(len[b] * batch.width);
  return batch;
}

// work(i) for every i in [0, n), in one parallel region, each i given to the next free thread;
// with one thread per kWorkPerThread multiply-adds of `work` at most (a call too small to share
// runs on the calling thread alone: a parallel region costs more than it saves there, and much
// more on a machine that other jobs share).
constexpr int64_t kWorkPerThread = int64_t(1) << 24;
constexpr int64_t kWorkPerValueWritten = 8;  // a value written to memory takes about as long as 8 multiply-adds

template <typename Work>
void for_each_block(int64_t n, int64_t work, const Work& block_work) {
  const int64_t threads = std::min<int64_t>({n, at::get_num_threads(), 1 + work / kWorkPerThread});
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) block_work(i);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t i = next++; i < n; i = next++) block_work(i);
  });
}

// ---- forward -------------------------------------------------------------------------------------

// partial[block, i, f] = sum over the block's columns k < K of video order[i] of h * weight.
template <typename Tiles, typename scalar_t, typename acc_t>
MR_INLINE void forward_block(const Batch& batch, int64_t block, const scalar_t* h, const scalar_t* weight, acc_t* partial) {
  using V = Lanes<acc_t, Tiles::kLanes>;
  constexpr int kLanes = Tiles::kLanes;
  const int64_t c0 = block * kBlockColumns, c1 = std::min(c0 + kBlockColumns, batch.columns);
  const int64_t active = batch.reaching(c0);
  for (int64_t f0 = 0; f0 < batch.features; f0 += kTileRows) {       // 4 weight rows stay in cache
    const scalar_t* rows[kTileRows];                                     // weight[f0 + r, c0:], the last
    for (int r = 0; r < kTileRows; ++r)                                  // row again past F (unused)
      rows[r] = weight + std::min(f0 + r, batch.features - 1) * batch.weight_stride + c0;
    for (int64_t i0 = 0; i0 < active; i0 += Tiles::kVideos) {            // kVideos at a time (sorted)
      const scalar_t* video[Tiles::kVideos];                             // h[order[i], c0:], the last
      int64_t end[Tiles::kVideos];                                       // video again past `active`
      for (int r = 0; r < Tiles::kVideos; ++r) {
        const int64_t i = std::min(i0 + r, active - 1);
        video[r] = h + batch.order[i] * batch.columns + c0;
        end[r] = std::min(batch.reach[i], c1) - c0;                      // the video's real columns here
      }
      V acc[Tiles::kVideos][kTileRows];                                  // [video][feature]
      zero(acc);
      const int64_t shared = end[Tiles::kVideos - 1] / kLanes * kLanes;  // the tile's shortest video
      accumulate_dots_tile(shared, video, rows, acc);                    // ... while all pass, then
      for (int r = 0; r < Tiles::kVideos && i0 + r < active; ++r) {             // each video to its end
        accumulate_dots(shared, end[r], video[r], rows, acc[r]);
        for (int s = 0; s < kTileRows && f0 + s < batch.features; ++s) {
          acc_t sum = 0;
          for (int j = 0; j < kLanes; ++j) sum += acc[r][s][j];
          partial[(block * batch.size + i0 + r) * batch.features + f0 + s] = sum;
        }
      }
    }
  }
}

// ---- backward ------------------------------------------------------------------------------------

// The number of values of the kLanes at column k of a row whose values end at `end` (0 to kLanes).
template <int kLanes>
MR_INLINE int64_t lanes_before(int64_t end, int64_t k) { return std::clamp<int64_t>(end - k, 0, kLanes); }

// grad_h[b, c0:c1]: the block's weight against each video's grad_out row, up to the video's
// end, then exact zeros. Tiles::kColumns (64 with AVX-512) columns at a time for every video, in
// tiles of 4 videos (sorted order): those columns of the F weight rows stay in cache while all
// the videos use them.
template <typename Tiles, typename scalar_t, typename acc_t>
MR_INLINE void grad_h_block(const Batch& batch, int64_t block, const acc_t* g, const scalar_t* weight, scalar_t* grad_h) {
  using V = Lanes<acc_t, Tiles::kLanes>;
  constexpr int kLanes = Tiles::kLanes;
  const int64_t c0 = block * kBlockColumns, columns = std::min(kBlockColumns, batch.columns - c0);
  const std::vector<acc_t> no_gradient(batch.features, acc_t(0));
  auto end_of = [&](int64_t i) {  // real columns of video order[i] in this block (0 past the batch)
    return i < batch.size ? std::clamp<int64_t>(batch.reach[i] - c0, 0, columns) : int64_t(0);
  };
  for (int64_t q0 = 0; q0 < end_of(0); q0 += Tiles::kColumns) {
    const scalar_t* w = weight + c0 + q0;
    // The next columns of the weight rows are fetched into cache while these are used: F rows
    // far apart are more streams than the hardware prefetcher follows.
    for (int64_t f = 0; f < batch.features; ++f)
      prefetch_lines(w + f * batch.weight_stride + Tiles::kColumns, Tiles::kColumns);
    for (int64_t i0 = 0; i0 < batch.size && end_of(i0) > q0; i0 += kTileRows) {  // tiles reaching q0
      const acc_t* g_row[kTileRows];
      for (int r = 0; r < kTileRows; ++r)
        g_row[r] = i0 + r < batch.size ? g + batch.order[i0 + r] * batch.features : no_gradient.data();
      V acc[kTileRows][Tiles::kVectors];
      zero(acc);
      auto g_of = [&](int r, int64_t f) { return g_row[r][f]; };
      if (columns - q0 >= Tiles::kColumns)
        accumulate_tile(
            batch.features, g_of, [&](int64_t f, int c) { return load_lanes<V>(w + f * batch.weight_stride + c * kLanes); },
            acc);
      else  // the block's last, partial columns
        accumulate_tile(
            batch.features, g_of,
            [&](int64_t f, int c) {
              return load_lanes<V>(w + f * batch.weight_stride + c * kLanes,
                                       lanes_before<kLanes>(columns - q0, c * kLanes));
            },
            acc);
      for (int r = 0; r < kTileRows; ++r) {
        scalar_t* out = grad_h + batch.order[std::min(i0 + r, batch.size - 1)] * batch.columns + c0 + q0;
        for (int c = 0; c < Tiles::kVectors; ++c)
          stream_lanes(out + c * kLanes, acc[r][c], lanes_before<kLanes>(end_of(i0 + r) - q0, c * kLanes));
      }
    }
  }
  for (int64_t i = 0; i < batch.size; ++i) {
    scalar_t* row = grad_h + batch.order[i] * batch.columns + c0;
    stream_zeros<V>(row + end_of(i), columns - end_of(i));
  }
}

// grad_weight[:, c0:c1], Tiles::kColumns columns and 4 features at a time: the videos that reach the
// columns (a prefix of the sorted order) each add grad_out[b, f] * h[b, k]; exact zeros where
// none reaches. g_sorted: grad_out's rows in sorted order, F rounded up to 4 with zeros.
template <typename Tiles, typename scalar_t, typename acc_t>
MR_INLINE void grad_weight_block(const Batch& batch, int64_t block, const acc_t* g_sorted, const scalar_t* h,
                                 scalar_t* grad_weight) {
  using V = Lanes<acc_t, Tiles::kLanes>;
  constexpr int kLanes = Tiles::kLanes;
  const int64_t c0 = block * kBlockColumns, c1 = std::min(c0 + kBlockColumns, batch.columns);
  const int64_t pitch = round_up(batch.features, kTileRows);
  for (int64_t k0 = c0; k0 < c1; k0 += Tiles::kColumns) {
    const int64_t n = std::min(Tiles::kColumns, c1 - k0);
    const int64_t active = batch.reaching(k0);                                   // videos that reach k0
    const int64_t whole = n == Tiles::kColumns ? batch.reaching(k0 + n - 1) : 0;   // ... and all n (a whole tile)
    auto video = [&](int64_t i) { return h + batch.order[i] * batch.columns + k0; };
    // The next columns of each video are fetched into cache while these are summed: the B
    // rows of h, far apart, are more streams than the hardware prefetcher follows.
    for (int64_t i = 0; i < batch.reaching(k0 + Tiles::kColumns); ++i)
      prefetch_lines(video(i) + Tiles::kColumns, Tiles::kColumns);
    for (int64_t f0 = 0; f0 < batch.features; f0 += kTileRows) {
      auto g_of = [&](int r, int64_t i) { return g_sorted[i * pitch + f0 + r]; };
      V acc[kTileRows][Tiles::kVectors];
      zero(acc);
      accumulate_tile(  // the videos that reach all the columns, then those that end before
          whole, g_of, [&](int64_t i, int c) { return load_lanes<V>(video(i) + c * kLanes); }, acc);
      accumulate_tile(
          active - whole, [&](int r, int64_t p) { return g_of(r, whole + p); },
          [&](int64_t p, int c) {
            const int64_t i = whole + p;
            return load_lanes<V>(video(i) + c * kLanes,
                                     lanes_before<kLanes>(std::min(n, batch.reach[i] - k0), c * kLanes));
          },
          acc);
      for (int r = 0; r < kTileRows && f0 + r < batch.features; ++r)
        for (int c = 0; c < Tiles::kVectors; ++c)
          stream_lanes(grad_weight + (f0 + r) * batch.columns + k0 + c * kLanes, acc[r][c],
                                       lanes_before<kLanes>(n, c * kLanes));
    }
  }
}

// One block of the backward. g: grad_out (B, F) as acc_t in batch order; g_sorted: its rows in
// sorted order, F rounded up to 4; a null grad_h or grad_weight is not wanted.
template <typename Tiles, typename scalar_t, typename acc_t>
MR_INLINE void backward_block(const Batch& b, int64_t block, const acc_t* g, const acc_t* g_sorted, const scalar_t* h,
                              const scalar_t* w, scalar_t* grad_h, scalar_t* grad_weight) {
  if (grad_h != nullptr) grad_h_block<Tiles>(b, block, g, w, grad_h);
  if (grad_weight != nullptr) grad_weight_block<Tiles>(b, block, g_sorted, h, grad_weight);
  store_fence();  // the non-temporal stores reach memory before another thread may read them
}

// ---- one compilation for each kind of CPU ----------------------------------------------------------

// The kernels of one block, compiled for one kind of CPU with the tiles that fit its registers:
// AVX-512 (x86-64-v4), AVX2 (x86-64-v3) and baseline x86-64; elsewhere only the last.
template <typename scalar_t, typename acc_t>
struct Kernels {
  void (*forward)(const Batch&, int64_t block, const scalar_t* h, const scalar_t* w, acc_t* partial);
  void (*backward)(const Batch&, int64_t block, const acc_t* g, const acc_t* g_sorted, const scalar_t* h,
                   const scalar_t* w, scalar_t* grad_h, scalar_t* grad_weight);
};

#if MR_PER_CPU_KIND
template <typename scalar_t, typename acc_t>
MR_TARGET("arch=x86-64-v4") void forward_avx512(const Batch& b, int64_t block, const scalar_t* h, const scalar_t* w,
                                                acc_t* partial) {
  forward_block<Avx512Tiles>(b, block, h, w, partial);
}
template <typename scalar_t, typename acc_t>
MR_TARGET("arch=x86-64-v4") void backward_avx512(const Batch& b, int64_t block, const acc_t* g, const acc_t* gs,
                                                 const scalar_t* h, const scalar_t* w, scalar_t* gh, scalar_t* gw) {
  backward_block<Avx512Tiles>(b, block, g, gs, h, w, gh, gw);
}
template <typename scalar_t, typename acc_t>
MR_TARGET("arch=x86-64-v3") void forward_avx2(const Batch& b, int64_t block, const scalar_t* h, const scalar_t* w,
                                              acc_t* partial) {
  forward_block<Avx2Tiles>(b, block, h, w, partial);
}
template <typename scalar_t, typename acc_t>
MR_TARGET("arch=x86-64-v3") void backward_avx2(const Batch& b, int64_t block, const acc_t* g, const acc_t* gs,
                                               const scalar_t* h, const scalar_t* w, scalar_t* gh, scalar_t* gw) {
  backward_block<Avx2Tiles>(b, block, g, gs, h, w, gh, gw);
}
#endif
template <typename scalar_t, typename acc_t>
void forward_baseline(const Batch& b, int64_t block, const scalar_t* h, const scalar_t* w, acc_t* partial) {
  forward_block<BaselineTiles>(b, block, h, w, partial);
}
template <typename scalar_t, typename acc_t>
void backward_baseline(const Batch& b, int64_t block, const acc_t* g, const acc_t* gs, const scalar_t* h,
                       const scalar_t* w, scalar_t* gh, scalar_t* gw) {
  backward_block<BaselineTiles>(b, block, g, gs, h, w, gh, gw);
}

enum class CpuKind { kBaseline, kAvx2, kAvx512 };

// The most capable kind this CPU is, decided once; MMARNN_CPU_KERNELS=avx2 or =baseline picks a
// lower one (so that the tests and the benchmark can run every compilation on one machine).
CpuKind cpu_kind() {
  static const CpuKind kind = [] {
    CpuKind best = CpuKind::kBaseline;
#if MR_PER_CPU_KIND
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) best = CpuKind::kAvx512;
    else if (__builtin_cpu_supports("x86-64-v3")) best = CpuKind::kAvx2;
#endif
    const char* wanted = std::getenv("MMARNN_CPU_KERNELS");
    if (wanted == nullptr || *wanted == '\0') return best;
    const std::string name(wanted);
    TORCH_CHECK(name == "avx512" || name == "avx2" || name == "baseline",
                "MMARNN_CPU_KERNELS must be avx512, avx2 or baseline, got '", name, "'");
    const CpuKind asked = name == "avx512" ? CpuKind::kAvx512 : name == "avx2" ? CpuKind::kAvx2 : CpuKind::kBaseline;
    TORCH_CHECK(asked <= best, "MMARNN_CPU_KERNELS=", name, ": this CPU cannot run that compilation");
    return asked;
  }();
  return kind;
}

// The compilation the CPU kernels run: "avx512", "avx2" or "baseline" (the benchmark prints it).
std::string cpu_kernels() {
  switch (cpu_kind()) {
    case CpuKind::kAvx512: return "avx512";
    case CpuKind::kAvx2: return "avx2";
    default: return "baseline";
  }
}

template <typename scalar_t, typename acc_t>
Kernels<scalar_t, acc_t> kernels() {
  switch (cpu_kind()) {
#if MR_PER_CPU_KIND
    case CpuKind::kAvx512: return {forward_avx512<scalar_t, acc_t>, backward_avx512<scalar_t, acc_t>};
    case CpuKind::kAvx2: return {forward_avx2<scalar_t, acc_t>, backward_avx2<scalar_t, acc_t>};
#endif
    default: return {forward_baseline<scalar_t, acc_t>, backward_baseline<scalar_t, acc_t>};
  }
}

template <typename scalar_t>
void routing_forward(const Batch& batch, const scalar_t* h, const scalar_t* weight, const scalar_t* bias, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto forward_block_here = kernels<scalar_t, acc_t>().forward;
  std::vector<acc_t> partial(batch.blocks() * batch.size * batch.features);  // (blocks, B, F), videos sorted
  for_each_block(batch.blocks(), batch.forward_work(),
                 [&](int64_t block) { forward_block_here(batch, block, h, weight, partial.data()); });
  for (int64_t i = 0; i < batch.size; ++i) {  // the blocks each video reaches, in block order, then the bias
    const int64_t reached = (batch.reach[i] + kBlockColumns - 1) / kBlockColumns;
    for (int64_t f = 0; f < batch.features; ++f) {
      acc_t sum = 0;
      for (int64_t block = 0; block < reached; ++block) sum += partial[(block * batch.size + i) * batch.features + f];
      if (bias != nullptr) sum += static_cast<acc_t>(bias[f]);
      out[batch.order[i] * batch.features + f] = static_cast<scalar_t>(sum);
    }
  }
}

// ---- the operators ---------------------------------------------------------------------------------

template <typename scalar_t>
const scalar_t* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

at::Tensor masked_routing_cpu(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CPU);
  check_bias(bias, h, weight.size(0));
  const Batch batch = read_batch(h, lengths, weight);
  at::Tensor out = at::empty({batch.size, batch.features}, h.options());  // (B, F)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "masked_routing_cpu", [&] {
    routing_forward(batch, h.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), data_or_null<scalar_t>(bias),
                    out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> masked_routing_backward_cpu(const at::Tensor& grad_out, const at::Tensor& h,
                                                               const at::Tensor& lengths, const at::Tensor& weight,
                                                               std::array<bool, 2> output_mask) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CPU);
  check_grad_out(grad_out, h, weight.size(0));
  const Batch batch = read_batch(h, lengths, weight);
  at::Tensor grad_h = output_mask[0] ? at::empty_like(h) : at::empty({0}, h.options());              // (B, T, D)
  at::Tensor grad_weight = output_mask[1] ? at::empty({batch.features, batch.columns}, h.options())  // (F, T*D)
                                          : at::empty({0}, h.options());
  if (!output_mask[0] && !output_mask[1]) return {grad_h, grad_weight};

  const at::ScalarType accumulate = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor g = grad_out.to(accumulate).contiguous();                                          // (B, F)
  const at::Tensor g_sorted = at::constant_pad_nd(                                                    // (B, F up to 4)
      g.index_select(0, at::tensor(batch.order, lengths.options())), {0, round_up(batch.features, kTileRows) - batch.features});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "masked_routing_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* g_data = g.data_ptr<acc_t>();
    const acc_t* gs_data = g_sorted.data_ptr<acc_t>();
    scalar_t* gh = output_mask[0] ? grad_h.data_ptr<scalar_t>() : nullptr;
    scalar_t* gw = output_mask[1] ? grad_weight.data_ptr<scalar_t>() : nullptr;
    const scalar_t* h_data = h.data_ptr<scalar_t>();
    const scalar_t* w_data = weight.data_ptr<scalar_t>();
    const int64_t written = (output_mask[0] ? batch.size : 0) + (output_mask[1] ? batch.features : 0);  // x K values
    const int64_t work = batch.forward_work() * (output_mask[0] + output_mask[1]) +
                         kWorkPerValueWritten * written * batch.columns;
    const auto backward_block_here = kernels<scalar_t, acc_t>().backward;
    for_each_block(batch.blocks(), work, [&](int64_t block) {
      backward_block_here(batch, block, g_data, gs_data, h_data, w_data, gh, gw);
    });
  });
  return {grad_h, grad_weight};
}

// ---- autocast: run in the autocast dtype (as torch.nn.functional.linear does) ----------------

constexpr char kMaskedRouting[] = "mmarnn_min::masked_routing";
constexpr char kMaskedRoutingEmulated[] = "mmarnn_min::masked_routing_emulated";

template <c10::DeviceType kDevice, c10::DispatchKey kAutocastKey, const char* kOperator>
at::Tensor masked_routing_autocast(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                                   const c10::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKey);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(kDevice);
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kOperator, "").typed<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&)>();
  return op.call(at::autocast::cached_cast(dtype, h, kDevice), lengths, at::autocast::cached_cast(dtype, weight, kDevice),
                 at::autocast::cached_cast(dtype, bias, kDevice));
}

}  // namespace

TORCH_LIBRARY(mmarnn_min, m) {
  m.def("masked_routing(Tensor h, Tensor lengths, Tensor weight, Tensor? bias) -> Tensor");
  m.def("masked_routing_backward(Tensor grad_out, Tensor h, Tensor lengths, Tensor weight, bool[2] output_mask) "
        "-> (Tensor, Tensor)");
  // the CUDA kernels run on the CPU by the emulator (masked_routing_emulated.cpp)
  m.def("masked_routing_emulated(Tensor h, Tensor lengths, Tensor weight, Tensor? bias) -> Tensor");
  m.def("masked_routing_emulated_backward(Tensor grad_out, Tensor h, Tensor lengths, Tensor weight, "
        "bool[2] output_mask) -> (Tensor, Tensor)");
  m.def("cpu_kernels() -> str", &cpu_kernels);
}

TORCH_LIBRARY_IMPL(mmarnn_min, CPU, m) {
  m.impl("masked_routing", &masked_routing_cpu);
  m.impl("masked_routing_backward", &masked_routing_backward_cpu);
}

TORCH_LIBRARY_IMPL(mmarnn_min, AutocastCPU, m) {
  m.impl("masked_routing",
         &masked_routing_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU, kMaskedRouting>);
  m.impl("masked_routing_emulated",
         &masked_routing_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU, kMaskedRoutingEmulated>);
}

TORCH_LIBRARY_IMPL(mmarnn_min, AutocastCUDA, m) {
  m.impl("masked_routing",
         &masked_routing_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA, kMaskedRouting>);
}

}  // namespace mmarnn_min
