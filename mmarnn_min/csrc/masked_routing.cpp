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
// How the CPU kernels avoid the padding. Sort the videos from longest to shortest. Then, for
// any block of frames, the videos that reach into it are a prefix of the sorted rows, so the
// block's contribution is one matrix product over that prefix, done by the BLAS library that
// PyTorch ships, on a copy of just those rows' real frames:
//
//          frames ->  block 0    block 1    block 2
//   row 0 (L=300)    [########] [########] [####0000]     partial_0[:3] = rows[:3, blk0] @ W_blk0^T
//   row 1 (L=170)    [########] [##000000]                partial_1[:2] = rows[:2, blk1] @ W_blk1^T
//   row 2 (L=60)     [######00]                           partial_2[:1] = rows[:1, blk2] @ W_blk2^T
//
// No video's padded frames are read, frames past the longest video are never touched, and the
// few frames between a video's end and its last block's end are zeros in the copy (they add
// exactly 0). A block holds kColumnsPerBlock / D frames, so each product is big enough to run
// at BLAS speed and its rows stay in cache. grad_weight is built the same way; grad_h is, per
// block, one product grad_out @ W_blk for every video, whose padded frames are then zeroed.
//
// Threads. Each call opens ONE parallel region on torch's intra-op threads and hands the blocks
// out one at a time to whichever thread is free; each block's products run on that thread
// alone. Small products that each open their own parallel region make every thread wait for the
// slowest at every product, and a thread that another process has descheduled then stalls them
// all, many times per call; here a thread that falls behind just takes fewer blocks. Each block
// writes its own partial sums, added in block order, so the result does not depend on which
// thread took which block.
//
// float16 and bfloat16: values are converted to float32 as a block is copied, products and sums
// run in float32, and each output is rounded once.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <numeric>
#include <tuple>
#include <vector>

#include "masked_routing.h"

namespace mmarnn_min {
namespace {

constexpr int64_t kColumnsPerBlock = 2048;

int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }

// The videos from longest to shortest, and the blocks of frames the kernels walk.
struct SortedBatch {
  std::vector<int64_t> order;   // order[i]: index in the batch of the i-th longest video
  std::vector<int64_t> length;  // length[i]: its length (descending)
  int64_t frames_per_block = 1;
  int64_t blocks = 0;           // blocks of frames_per_block frames covering all T frames

  // How many sorted rows reach frame t (length > t): a prefix of the rows.
  int64_t rows_reaching(int64_t t) const {
    return std::upper_bound(length.begin(), length.end(), t, [](int64_t frame, int64_t len) { return frame >= len; }) -
           length.begin();
  }
};

// Reads the lengths (host memory: there is no device to wait for) and checks every one before
// anything else is touched.
SortedBatch sort_by_length(const at::Tensor& lengths, int64_t frames, int64_t width) {
  const int64_t batch = lengths.size(0);
  const int64_t* len = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b)
    TORCH_CHECK(len[b] >= 0 && len[b] <= frames, "masked_routing: every length must lie in [0, T] = [0, ", frames,
                "], got ", len[b]);
  SortedBatch sorted;
  sorted.order.resize(batch);
  std::iota(sorted.order.begin(), sorted.order.end(), 0);
  std::stable_sort(sorted.order.begin(), sorted.order.end(), [len](int64_t a, int64_t b) { return len[a] > len[b]; });
  sorted.length.resize(batch);
  for (int64_t i = 0; i < batch; ++i) sorted.length[i] = len[sorted.order[i]];
  sorted.frames_per_block = std::max<int64_t>(1, kColumnsPerBlock / std::max<int64_t>(1, width));
  sorted.blocks = ceil_div(frames, sorted.frames_per_block);
  return sorted;
}

// work(i) for every i in [0, n), in one parallel region, each i given to the next free thread.
template <typename Work>
void for_each_block(int64_t n, const Work& work) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(n, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t i = next++; i < n; i = next++) work(i);
  });
}

// Rows [0, active) of the sorted batch over frames [t0, t1), as acc_t: each video's real values,
// then zeros up to the end of the block. rows: (active, (t1 - t0) * D).
template <typename scalar_t, typename acc_t>
void gather_block(const scalar_t* h, const SortedBatch& sorted, int64_t active, int64_t t0, int64_t t1,
                  int64_t frames, int64_t width, acc_t* rows) {
  const int64_t columns = (t1 - t0) * width;
  for (int64_t i = 0; i < active; ++i) {
    const int64_t real = (std::min(sorted.length[i], t1) - t0) * width;
    const scalar_t* video = h + (sorted.order[i] * frames + t0) * width;
    acc_t* row = rows + i * columns;
    for (int64_t c = 0; c < real; ++c) row[c] = static_cast<acc_t>(video[c]);
    std::fill(row + real, row + columns, acc_t(0));
  }
}

// weight[:, c0:c1] in the accumulation dtype: a view when it already is, else a converted copy.
at::Tensor weight_block(const at::Tensor& weight, int64_t c0, int64_t c1, at::ScalarType accumulate) {
  const at::Tensor block = weight.slice(1, c0, c1);  // (F, c1 - c0)
  return block.scalar_type() == accumulate ? block : block.to(accumulate);
}

at::ScalarType accumulate_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor masked_routing_cpu(const at::Tensor& h, const at::Tensor& lengths, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CPU);
  check_bias(bias, h, weight.size(0));
  const int64_t batch = h.size(0), frames = h.size(1), width = h.size(2), features = weight.size(0);
  const SortedBatch sorted = sort_by_length(lengths, frames, width);
  const at::ScalarType accumulate = accumulate_dtype(h.scalar_type());
  at::Tensor partial = at::empty({sorted.blocks, batch, features}, h.options().dtype(accumulate));  // rows sorted
  at::Tensor out = at::empty({batch, features}, h.options());                                       // (B, F)

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "masked_routing_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* h_data = h.data_ptr<scalar_t>();
    for_each_block(sorted.blocks, [&](int64_t block) {
      const int64_t t0 = block * sorted.frames_per_block, t1 = std::min(t0 + sorted.frames_per_block, frames);
      const int64_t active = sorted.rows_reaching(t0);
      if (active == 0) return;
      at::Tensor rows = at::empty({active, (t1 - t0) * width}, h.options().dtype(accumulate));  // (n, blk*D)
      gather_block(h_data, sorted, active, t0, t1, frames, width, rows.data_ptr<acc_t>());
      at::Tensor block_out = partial[block].narrow(0, 0, active);                                // (n, F)
      at::mm_out(block_out, rows, weight_block(weight, t0 * width, t1 * width, accumulate).t());
    });
    // out[order[i]] = (the partial sums of the blocks row i reaches, in block order) + bias
    const acc_t* parts = partial.data_ptr<acc_t>();
    const scalar_t* bias_data = bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr;
    scalar_t* out_data = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t reached = ceil_div(sorted.length[i], sorted.frames_per_block);
      for (int64_t f = 0; f < features; ++f) {
        acc_t sum = 0;
        for (int64_t block = 0; block < reached; ++block) sum += parts[(block * batch + i) * features + f];
        if (bias_data != nullptr) sum += static_cast<acc_t>(bias_data[f]);
        out_data[sorted.order[i] * features + f] = static_cast<scalar_t>(sum);
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> masked_routing_backward_cpu(const at::Tensor& grad_out, const at::Tensor& h,
                                                               const at::Tensor& lengths, const at::Tensor& weight,
                                                               std::array<bool, 2> output_mask) {
  check_routing_args(h, lengths, weight, c10::DeviceType::CPU);
  check_grad_out(grad_out, h, weight.size(0));
  const int64_t batch = h.size(0), frames = h.size(1), width = h.size(2), features = weight.size(0);
  const SortedBatch sorted = sort_by_length(lengths, frames, width);
  const bool want_grad_h = output_mask[0], want_grad_weight = output_mask[1];
  at::Tensor grad_h = want_grad_h ? at::empty_like(h) : at::empty({0}, h.options());                       // (B, T, D)
  at::Tensor grad_weight = want_grad_weight ? at::empty({features, frames * width}, h.options())           // (F, T*D)
                                            : at::empty({0}, h.options());
  if (!want_grad_h && !want_grad_weight) return {grad_h, grad_weight};

  const at::ScalarType accumulate = accumulate_dtype(h.scalar_type());
  const at::Tensor g = grad_out.to(accumulate);                                                            // (B, F)
  const at::Tensor g_sorted = g.index_select(0, at::tensor(sorted.order, lengths.options()));             // (B, F)
  const int64_t* len = lengths.data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "masked_routing_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* h_data = h.data_ptr<scalar_t>();
    for_each_block(sorted.blocks, [&](int64_t block) {
      const int64_t t0 = block * sorted.frames_per_block, t1 = std::min(t0 + sorted.frames_per_block, frames);
      const int64_t c0 = t0 * width, columns = (t1 - t0) * width;
      const int64_t active = sorted.rows_reaching(t0);
      const at::Tensor w = active > 0 ? weight_block(weight, c0, c0 + columns, accumulate) : at::Tensor();  // (F, blk*D)

      if (want_grad_h) {  // every video's frames of this block: W_t^T g_b up to its end, then exact zeros
        scalar_t* grad_rows = grad_h.data_ptr<scalar_t>();
        at::Tensor values;                                                                     // (B, blk*D)
        if (active > 0) {
          if constexpr (std::is_same_v<scalar_t, acc_t>) {  // straight into grad_h's rows
            values = grad_h.view({batch, frames * width}).slice(1, c0, c0 + columns);
            at::mm_out(values, g, w);
          } else {
            values = at::mm(g, w);
          }
        }
        for (int64_t b = 0; b < batch; ++b) {
          scalar_t* row = grad_rows + b * frames * width + c0;
          const int64_t real = std::clamp<int64_t>((len[b] - t0) * width, 0, columns);
          if constexpr (!std::is_same_v<scalar_t, acc_t>) {
            const acc_t* value = real > 0 ? values.data_ptr<acc_t>() + b * columns : nullptr;
            for (int64_t c = 0; c < real; ++c) row[c] = static_cast<scalar_t>(value[c]);
          }
          std::fill(row + real, row + columns, scalar_t(0));
        }
      }

      if (want_grad_weight) {  // sum over the videos that reach the block: one product over a prefix
        at::Tensor block_grad = grad_weight.slice(1, c0, c0 + columns);                       // (F, blk*D)
        if (active == 0) {
          block_grad.zero_();
          return;
        }
        at::Tensor rows = at::empty({active, columns}, h.options().dtype(accumulate));        // (n, blk*D)
        gather_block(h_data, sorted, active, t0, t1, frames, width, rows.data_ptr<acc_t>());
        const at::Tensor g_active = g_sorted.narrow(0, 0, active).t();                        // (F, n)
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          at::mm_out(block_grad, g_active, rows);
        } else {
          block_grad.copy_(at::mm(g_active, rows));
        }
      }
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
