// The CUDA kernels of routing_kernels.cuh on the CPU, through cuda_emulator.h, with no PyTorch:
// a program small enough to build in seconds under ThreadSanitizer or AddressSanitizer, and to
// rebuild with a bug planted in a copy of the kernels (tests/test_cuda_emulator.py, lesson 6).
//
// It runs the forward and backward kernels in float32 and float64 on shapes that need several
// blocks of every kernel, with NaN in every padded frame and a weight whose rows lie further
// apart than T*D (a column slice), and checks them against a plain loop in long double: the
// outputs and gradients within a rounding bound, grad_h exactly 0 on padding, grad_weight
// exactly 0 past the longest video. Prints "selftest passed" and exits 0, or prints the first
// failure (a wrong value, or the emulator's report of a race, a divergent barrier, an
// out-of-bounds shared access) and exits 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "routing_kernels.cuh"

namespace {

using mmarnn_min::kernels::Shape;

struct Case {
  int64_t batch, frames, width, features, extra_columns;  // extra_columns: weight row stride - K
  bool with_bias;
};

struct Failure {
  std::string message;
};

template <typename T>
void check_close(const char* what, int64_t index, T got, long double want, long double magnitude, int64_t terms) {
  const long double bound = 4.0L * terms * std::numeric_limits<T>::epsilon() * magnitude + 1e-30L;
  if (!(std::fabs(static_cast<long double>(got) - want) <= bound))
    throw Failure{std::string(what) + "[" + std::to_string(index) + "] = " + std::to_string(double(got)) +
                  ", expected " + std::to_string(double(want))};
}

template <typename T>
void run_case(const Case& c, std::mt19937& random) {
  const int64_t columns = c.frames * c.width, stride = columns + c.extra_columns;
  const Shape s{c.batch, c.frames, c.width, c.features, columns, stride};
  std::uniform_real_distribution<double> value(-1.0, 1.0);
  std::uniform_int_distribution<int64_t> length(0, c.frames);

  std::vector<int64_t> lengths(c.batch);
  for (auto& l : lengths) l = length(random);
  if (c.batch > 1) lengths[0] = c.frames, lengths[1] = 0;
  std::vector<T> h(c.batch * columns), weight(c.features * stride), bias(c.features), grad_out(c.batch * c.features);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t k = 0; k < columns; ++k)
      h[b * columns + k] = k < lengths[b] * c.width ? T(value(random)) : std::numeric_limits<T>::quiet_NaN();
  for (auto& x : weight) x = T(value(random));
  for (auto& x : bias) x = T(value(random));
  for (auto& x : grad_out) x = T(value(random));

  using acc_t = typename mmarnn_min::kernels::Accumulate<T>::type;
  const auto plan = mmarnn_min::kernels::plan_forward(s, 4);
  std::vector<acc_t> partial(plan.slices * c.batch * c.features);
  std::vector<T> out(c.batch * c.features), grad_h(c.batch * columns), grad_weight(c.features * columns);
  mmarnn_min::kernels::launch_forward<T>(h.data(), lengths.data(), weight.data(), c.with_bias ? bias.data() : nullptr,
                                         out.data(), partial.data(), s, plan);
  mmarnn_min::kernels::launch_backward<T>(grad_out.data(), h.data(), lengths.data(), weight.data(), grad_h.data(),
                                          grad_weight.data(), s);

  int64_t longest = 0;
  for (int64_t l : lengths) longest = std::max(longest, l);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t f = 0; f < c.features; ++f) {
      long double sum = c.with_bias ? bias[f] : 0, magnitude = c.with_bias ? std::fabs(bias[f]) : 0;
      for (int64_t k = 0; k < lengths[b] * c.width; ++k) {
        sum += static_cast<long double>(weight[f * stride + k]) * h[b * columns + k];
        magnitude += std::fabs(static_cast<long double>(weight[f * stride + k]) * h[b * columns + k]);
      }
      check_close("out", b * c.features + f, out[b * c.features + f], sum, magnitude, columns + 1);
    }
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t k = 0; k < columns; ++k) {
      const int64_t i = b * columns + k;
      if (k >= lengths[b] * c.width) {
        if (grad_h[i] != T(0)) throw Failure{"grad_h[" + std::to_string(i) + "] is not exactly 0 on padding"};
        continue;
      }
      long double sum = 0, magnitude = 0;
      for (int64_t f = 0; f < c.features; ++f) {
        sum += static_cast<long double>(grad_out[b * c.features + f]) * weight[f * stride + k];
        magnitude += std::fabs(static_cast<long double>(grad_out[b * c.features + f]) * weight[f * stride + k]);
      }
      check_close("grad_h", i, grad_h[i], sum, magnitude, c.features);
    }
  for (int64_t f = 0; f < c.features; ++f)
    for (int64_t k = 0; k < columns; ++k) {
      const int64_t i = f * columns + k;
      if (k >= longest * c.width) {
        if (grad_weight[i] != T(0)) throw Failure{"grad_weight[" + std::to_string(i) + "] is not exactly 0 past the longest video"};
        continue;
      }
      long double sum = 0, magnitude = 0;
      for (int64_t b = 0; b < c.batch; ++b)
        if (k < lengths[b] * c.width) {
          sum += static_cast<long double>(grad_out[b * c.features + f]) * h[b * columns + k];
          magnitude += std::fabs(static_cast<long double>(grad_out[b * c.features + f]) * h[b * columns + k]);
        }
      check_close("grad_weight", i, grad_weight[i], sum, magnitude, c.batch);
    }
}

}  // namespace

int main() {
  // several video tiles (64), feature tiles and chunks (32), K slices, column blocks (128) and
  // staged groups of videos (32); F not a multiple of 32
  const std::vector<Case> cases = {
      {70, 25, 12, 40, 7, true},  // K = 300
      {5, 9, 16, 32, 0, false},   // K = 144, one video tile
      {3, 4, 3, 5, 2, true},      // tiny: one block of each kernel
  };
  std::mt19937 random(0);
  try {
    for (const Case& c : cases) {
      run_case<float>(c, random);
      run_case<double>(c, random);
    }
  } catch (const Failure& failure) {
    std::printf("selftest FAILED: wrong result: %s\n", failure.message.c_str());
    return 1;
  } catch (const cuda_emulator::LaunchError& error) {
    std::printf("selftest FAILED: %s\n", error.what());
    return 1;
  }
  std::printf("selftest passed: %zu shapes, float32 and float64, forward and backward\n", cases.size());
  return 0;
}
