// segment_sqdist on the CPU: out[b, n] = ||x[b, n+1] - x[b, n]||^2, one pass over x.
//
// Forward walks the segments in order, so row n+1 of one segment is row n of the next and is
// still in L1: x streams from memory once. Backward writes each row of grad_x exactly once:
//   grad_x[b, n] = 2 g[b, n-1] (x_n - x_{n-1}) - 2 g[b, n] (x_{n+1} - x_n)    (missing terms = 0)
#include <torch/library.h>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

// Rows per parallel grain: about 32k elements, so tiny inputs stay on one thread.
inline int64_t row_grain(int64_t D) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(D, 1)); }

template <typename T>
void segment_sqdist_kernel(const T* x, int64_t B, int64_t N, int64_t D, T* out) {
  const int64_t S = B * (N - 1);
  at::parallel_for(0, S, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t b = s / (N - 1), n = s % (N - 1);
      const T* x0 = x + (b * N + n) * D;
      const T* x1 = x0 + D;
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < D; ++j) {
        const T diff = x1[j] - x0[j];
        acc += diff * diff;
      }
      out[s] = acc;
    }
  });
}

template <typename T>
void segment_sqdist_backward_kernel(const T* g, const T* x, int64_t B, int64_t N, int64_t D, T* gx) {
  at::parallel_for(0, B * N, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / N, n = p % N;
      const T* xn = x + p * D;
      // Missing neighbours (curve ends) point at row n itself: their difference is exactly 0.
      const T* xp = n > 0 ? xn - D : xn;
      const T* xq = n < N - 1 ? xn + D : xn;
      const T gp = n > 0 ? T(2) * g[b * (N - 1) + n - 1] : T(0);
      const T gq = n < N - 1 ? T(2) * g[b * (N - 1) + n] : T(0);
      T* out = gx + p * D;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) out[j] = gp * (xn[j] - xp[j]) - gq * (xq[j] - xn[j]);
    }
  });
}

at::Tensor segment_sqdist_cpu(const at::Tensor& x_in) {
  TORCH_CHECK_VALUE(x_in.dim() == 3, "x must be (B, N, D), got ", x_in.sizes());
  TORCH_CHECK_VALUE(x_in.size(1) >= 2, "x must have N >= 2 points per curve, got ", x_in.sizes());
  TORCH_CHECK_TYPE(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
                   "x must be float32 or float64, got ", x_in.scalar_type());
  const at::Tensor x = plain(x_in);
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  at::Tensor out = new_output({B, N - 1}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastgeo::segment_sqdist", [&] {
    segment_sqdist_kernel<scalar_t>(x.data_ptr<scalar_t>(), B, N, D, out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor segment_sqdist_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in) {
  TORCH_CHECK_VALUE(x_in.dim() == 3 && x_in.size(1) >= 2, "x must be (B, N, D) with N >= 2, got ",
                    x_in.sizes());
  TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == x_in.size(0) &&
                        grad_in.size(1) == x_in.size(1) - 1,
                    "grad must be (B, N-1) = ", x_in.size(0), ", ", x_in.size(1) - 1, ", got ",
                    grad_in.sizes());
  TORCH_CHECK_TYPE(grad_in.scalar_type() == x_in.scalar_type(), "grad dtype ", grad_in.scalar_type(),
                   " differs from x dtype ", x_in.scalar_type());
  const at::Tensor x = plain(x_in);
  const at::Tensor g = plain(grad_in);
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  at::Tensor gx = new_output({B, N, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastgeo::segment_sqdist_backward", [&] {
    segment_sqdist_backward_kernel<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), B, N, D,
                                             gx.data_ptr<scalar_t>());
  });
  return gx;
}

}  // namespace

}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("segment_sqdist", &fastgeo::cpu::segment_sqdist_cpu);
  m.impl("segment_sqdist_backward", &fastgeo::cpu::segment_sqdist_backward_cpu);
}
