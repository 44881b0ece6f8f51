// Masked routing (MMA-MRNNet, section 3.2): the operator's schema and its CPU kernels.
//
//   forward   out[b]        = bias + sum_{t < L_b} W_t @ h[b, t]           W_t = weight[:, t*D:(t+1)*D]
//   backward  grad_h[b, t]  = W_t^T @ grad_out[b]            if t < L_b, else exactly 0
//             grad_W_t      = sum_{b : t < L_b} grad_out[b] (x) h[b, t]  (exactly 0 when no b reaches t)
//   (grad_bias = sum_b grad_out[b] is one line of Python in mmarnn_min/routing.py.)
//
// How the CPU kernels avoid the padding. Sort the videos from longest to shortest and copy each
// video's real frames into one row of a compact buffer. Then, for any block of frames, the
// videos that reach into it are a prefix of the rows, so the block's contribution is a single
// matrix product over that prefix, done by the BLAS library that PyTorch ships:
//
//          frames ->  block 0    block 1    block 2
//   row 0 (L=300)    [########] [########] [####0000]     out_sorted[:3] += rows[:3, blk0] @ W_blk0^T
//   row 1 (L=170)    [########] [##000000]                out_sorted[:2] += rows[:2, blk1] @ W_blk1^T
//   row 2 (L=60)     [######00]                           out_sorted[:1] += rows[:1, blk2] @ W_blk2^T
//
// No video's padded frames are read, frames past the longest video are never touched, and the
// few frames between a video's end and its last block's end are zeros in the compact copy (they
// add exactly 0). Blocks hold kColumnsPerBlock / D frames so each product is big enough to run at
// BLAS speed; the sort costs O(B log B), the copy O(sum_b L_b * D). grad_weight is built the
// same way. grad_h is one product grad_out @ weight[:, :longest*D] written straight into
// grad_h, whose padded frames are then set to exact zeros: measured faster than per-block
// products into the sorted buffer plus a scatter back (python -m mmarnn_min.bench).
#include "masked_routing.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace mmarnn_min {
namespace {

constexpr int64_t kColumnsPerBlock = 2048;  // measured here: 8192 and 32768 were slower

struct SortedBatch {
  at::Tensor order;             // (B,) int64: order[i] = index in the batch of the i-th longest video
  std::vector<int64_t> length;  // (B,) the lengths in that order (descending)
  at::Tensor rows;              // (B, longest*D): row i = real frames of video order[i], then zeros
  int64_t frames_per_block;
};

int64_t frames_per_block(int64_t width) { return std::max<int64_t>(1, kColumnsPerBlock / std::max<int64_t>(1, width)); }

// Number of sorted rows whose video reaches frame t (length > t): a prefix of the rows.
int64_t rows_reaching(const std::vector<int64_t>& length, int64_t t) {
  return std::upper_bound(length.begin(), length.end(), t, [](int64_t frame, int64_t len) { return frame >= len; }) -
         length.begin();
}

SortedBatch sort_and_compact(const at::Tensor& h, const at::Tensor& lengths, int64_t longest) {
  const int64_t batch = h.size(0), frames = h.size(1), width = h.size(2);
  SortedBatch sorted;
  sorted.frames_per_block = frames_per_block(width);
  const int64_t* len = lengths.data_ptr<int64_t>();
  std::vector<int64_t> order(batch);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [len](int64_t a, int64_t b) { return len[a] > len[b]; });
  sorted.length.resize(batch);
  for (int64_t i = 0; i < batch; ++i) sorted.length[i] = len[order[i]];
  sorted.order = at::tensor(order, lengths.options());
  sorted.rows = at::empty({batch, longest * width}, h.options());  // (B, longest*D)

  const int64_t block = sorted.frames_per_block;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "masked_routing_sort_and_compact", [&] {
    const scalar_t* src = h.data_ptr<scalar_t>();
    scalar_t* dst = sorted.rows.data_ptr<scalar_t>();
    for (int64_t i = 0; i < batch; ++i) {
        const int64_t real = sorted.length[i] * width;
        // zeros up to the end of the last block this row takes part in
        const int64_t padded = std::min((sorted.length[i] + block - 1) / block * block, longest) * width;
        const scalar_t* video = src + order[i] * frames * width;
        std::copy_n(video, real, dst + i * longest * width);
        std::fill(dst + i * longest * width + real, dst + i * longest * width + padded, scalar_t(0));
    }
  });
  return sorted;
}

at::Tensor masked_routing_cpu(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CPU);
  check_bias(bias, h, weight.size(0));
  const int64_t longest = checked_longest_length(lengths, h.size(1));
  const int64_t batch = h.size(0), width = h.size(2), features = weight.size(0);

  at::Tensor out = bias.has_value() ? bias->unsqueeze(0).expand({batch, features}).clone(at::MemoryFormat::Contiguous)
                                    : at::zeros({batch, features}, h.options());  // (B, F)
  if (longest == 0) return out;

  const SortedBatch sorted = sort_and_compact(h, lengths, longest);
  at::Tensor out_sorted = at::zeros({batch, features}, h.options());  // (B, F), rows in sorted order
  for (int64_t t0 = 0; t0 < longest; t0 += sorted.frames_per_block) {
    const int64_t t1 = std::min(t0 + sorted.frames_per_block, longest);
    const int64_t active = rows_reaching(sorted.length, t0);
    const at::Tensor rows = sorted.rows.slice(0, 0, active).slice(1, t0 * width, t1 * width);  // (n, blk*D)
    const at::Tensor w = weight.slice(1, t0 * width, t1 * width);                                // (F, blk*D)
    out_sorted.slice(0, 0, active).addmm_(rows, w.t());
  }
  return out.index_add_(0, sorted.order, out_sorted);
}

std::tuple<at::Tensor, at::Tensor> masked_routing_backward_cpu(const at::Tensor& grad_out, const at::Tensor& h,
                                                               const at::Tensor& lengths, const at::Tensor& weight) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CPU);
  check_grad_out(grad_out, h, weight.size(0));
  const int64_t longest = checked_longest_length(lengths, h.size(1));
  const int64_t batch = h.size(0), frames = h.size(1), width = h.size(2);

  at::Tensor grad_h = at::empty_like(h);            // (B, T, D)
  at::Tensor grad_weight = at::empty_like(weight);  // (F, T*D)
  grad_weight.slice(1, longest * width).zero_();    // frames no video reaches
  if (longest == 0) return {grad_h.zero_(), grad_weight};

  // grad_h: one product over the frames up to the longest video, written straight into
  // grad_h's rows, then each video's padded frames set to exact zeros.
  at::Tensor grad_h_rows = grad_h.view({batch, frames * width});                 // (B, T*D)
  at::Tensor grad_h_reached = grad_h_rows.slice(1, 0, longest * width);          // (B, longest*D)
  at::mm_out(grad_h_reached, grad_out, weight.slice(1, 0, longest * width));
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "masked_routing_backward_zero_padding", [&] {
    scalar_t* rows = grad_h_rows.data_ptr<scalar_t>();
    const int64_t* len = lengths.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b)
      std::fill(rows + b * frames * width + len[b] * width, rows + (b + 1) * frames * width, scalar_t(0));
  });

  // grad_weight: per block of frames, one product over the videos that reach it.
  const SortedBatch sorted = sort_and_compact(h, lengths, longest);
  const at::Tensor grad_sorted = grad_out.index_select(0, sorted.order);  // (B, F)
  for (int64_t t0 = 0; t0 < longest; t0 += sorted.frames_per_block) {
    const int64_t t1 = std::min(t0 + sorted.frames_per_block, longest);
    const int64_t active = rows_reaching(sorted.length, t0);
    const at::Tensor rows = sorted.rows.slice(0, 0, active).slice(1, t0 * width, t1 * width);  // (n, blk*D)
    at::Tensor grad_w_block = grad_weight.slice(1, t0 * width, t1 * width);                      // (F, blk*D)
    at::mm_out(grad_w_block, grad_sorted.slice(0, 0, active).t(), rows);
  }
  return {grad_h, grad_weight};
}

}  // namespace

TORCH_LIBRARY(mmarnn_min, m) {
  m.def("masked_routing(Tensor h, Tensor lengths, Tensor weight, Tensor? bias) -> Tensor");
  m.def("masked_routing_backward(Tensor grad_out, Tensor h, Tensor lengths, Tensor weight) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmarnn_min, CPU, m) {
  m.impl("masked_routing", &masked_routing_cpu);
  m.impl("masked_routing_backward", &masked_routing_backward_cpu);
}

}  // namespace mmarnn_min
