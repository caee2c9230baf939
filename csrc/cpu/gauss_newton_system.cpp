// gauss_newton_system on the CPU: the gradient and Gauss-Newton matrix of the discrete energy of
// a batch of curves c(t) = line(t) + sum_j a_j psi_j(t), from the features f_n = f(c_n) of the
// curve's N points and their transposed Jacobians J_n (d x F), one curve per task.
//
//   residuals r_n = f_{n+1} - f_n, E' = sum_n ||r_n||^2 / 2
//   grad[j, i]           = sum_p psi_pj  J_p[i] . (r_{p-1} - r_p)          (missing r = 0)
//   hess[(j,i), (l,k)]   = sum_p w_p psi_pj psi_pl  G_p[i,k]
//                        - sum_n psi_nj psi_(n+1)l C_n[i,k] - (the same with (j,i) <-> (l,k))
//   G_p = J_p J_p^T, C_n = J_n J_(n+1)^T, w_p = number of segments point p belongs to.
//
// Everything a curve needs (N d + 2 N d^2 dot products of length F, then (m d)^2 sums over the
// points) stays in one thread's cache; the PyTorch reference (fastgeo/gauss_newton.py) spends most of
// its time in tiny batched GEMMs and the copies of the Jacobian slices they need.
#include <torch/library.h>

#include <vector>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

template <typename T>
inline T dot(const T* a, const T* b, int64_t F) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t c = 0; c < F; ++c) acc += a[c] * b[c];
  return acc;
}

// J_p[i] . (r_{p-1} - r_p) with r_{p-1} - r_p = (f_p - f_{p-1}) - (f_{p+1} - f_p), missing terms 0.
template <typename T>
inline T residual_dot(const T* Jpi, const T* fp, const T* fm, const T* fq, int64_t F) {
  T acc = T(0);
  if (fm && fq) {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < F; ++c) acc += Jpi[c] * ((fp[c] - fm[c]) - (fq[c] - fp[c]));
  } else if (fm) {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < F; ++c) acc += Jpi[c] * (fp[c] - fm[c]);
  } else if (fq) {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < F; ++c) acc -= Jpi[c] * (fq[c] - fp[c]);
  }
  return acc;
}

// Sum over n < len of a[n] b[n] c[n]: the point axis innermost, so it vectorizes.
template <typename T>
inline T triple_dot(const T* a, const T* b, const T* c, int64_t len) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t n = 0; n < len; ++n) acc += a[n] * b[n] * c[n];
  return acc;
}

// One curve. psiT is psi transposed, (m, N). Scratch holds the per-point products with the point
// index innermost: v (d, N), w_p G_p (d*d, N), C_n (d*d, N-1).
template <typename T>
void gauss_newton_curve(const T* f, const T* J, const T* psiT, int64_t N, int64_t d, int64_t F,
                        int64_t m, bool grad_only, T* grad, T* hess, std::vector<T>& scratch) {
  const int64_t p_dim = m * d;
  scratch.assign(N * d + 2 * N * d * d, T(0));
  T* v = scratch.data();
  T* G = v + N * d;
  T* C = G + N * d * d;
  for (int64_t p = 0; p < N; ++p) {
    const T* fp = f + p * F;
    const T* fm = p > 0 ? fp - F : nullptr;
    const T* fq = p < N - 1 ? fp + F : nullptr;
    for (int64_t i = 0; i < d; ++i) v[i * N + p] = residual_dot(J + (p * d + i) * F, fp, fm, fq, F);
  }
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t i = 0; i < d; ++i) grad[j * d + i] = dot(psiT + j * N, v + i * N, N);
  }
  if (grad_only) return;
  for (int64_t p = 0; p < N; ++p) {
    const T* Jp = J + p * d * F;
    const T w = T((p >= 1) + (p <= N - 2));  // segments point p belongs to
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t k = i; k < d; ++k) {
        const T g = w * dot(Jp + i * F, Jp + k * F, F);
        G[(i * d + k) * N + p] = g;
        G[(k * d + i) * N + p] = g;
      }
      if (p < N - 1) {
        for (int64_t k = 0; k < d; ++k) C[(i * d + k) * (N - 1) + p] = dot(Jp + i * F, Jp + (d + k) * F, F);
      }
    }
  }
  // hess[(j,i),(l,k)] = sum_p psi_pj psi_pl w_p G_p[i,k] - sum_n psi_nj psi_(n+1)l C_n[i,k]
  //                   - sum_n psi_nl psi_(n+1)j C_n[k,i]; symmetric, so the upper half is mirrored.
  for (int64_t q = 0; q < p_dim; ++q) {
    const int64_t j = q / d, i = q % d;
    for (int64_t r = q; r < p_dim; ++r) {
      const int64_t l = r / d, k = r % d;
      const T own = triple_dot(psiT + j * N, psiT + l * N, G + (i * d + k) * N, N);
      const T mixed = triple_dot(psiT + j * N, psiT + l * N + 1, C + (i * d + k) * (N - 1), N - 1) +
                      triple_dot(psiT + l * N, psiT + j * N + 1, C + (k * d + i) * (N - 1), N - 1);
      hess[q * p_dim + r] = own - mixed;
      hess[r * p_dim + q] = own - mixed;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> gauss_newton_system_cpu(const at::Tensor& f_in, const at::Tensor& jac_in,
                                                          const at::Tensor& psi_in, bool grad_only) {
  TORCH_CHECK_VALUE(f_in.dim() == 3, "f must be (B, N, F), got ", f_in.sizes());
  TORCH_CHECK_VALUE(jac_in.dim() == 4 && jac_in.size(0) == f_in.size(0) && jac_in.size(1) == f_in.size(1) &&
                        jac_in.size(3) == f_in.size(2),
                    "jac must be (B, N, d, F) matching f ", f_in.sizes(), ", got ", jac_in.sizes());
  TORCH_CHECK_VALUE(psi_in.dim() == 2 && psi_in.size(0) == f_in.size(1), "psi must be (N, m) with N = ",
                    f_in.size(1), ", got ", psi_in.sizes());
  TORCH_CHECK_VALUE(f_in.size(1) >= 2, "curves need N >= 2 points, got ", f_in.sizes());
  TORCH_CHECK_TYPE(f_in.scalar_type() == at::kFloat || f_in.scalar_type() == at::kDouble,
                   "f must be float32 or float64, got ", f_in.scalar_type());
  for (const at::Tensor* t : {&jac_in, &psi_in}) {
    TORCH_CHECK_TYPE(t->scalar_type() == f_in.scalar_type(), "fastgeo: all tensors must share f's dtype ",
                     f_in.scalar_type(), ", got ", t->scalar_type());
  }
  for (const at::Tensor* t : {&f_in, &jac_in, &psi_in}) {
    TORCH_CHECK_VALUE(t->device().is_cpu(), "fastgeo CPU kernel got a tensor on ", t->device());
  }
  const at::Tensor f = plain(f_in), jac = plain(jac_in), psiT = plain(psi_in.t());
  const int64_t B = f.size(0), N = f.size(1), F = f.size(2), d = jac.size(2), m = psiT.size(0);
  const int64_t p_dim = m * d;
  at::Tensor grad = at::empty({B, p_dim}, f.options());
  at::Tensor hess = grad_only ? at::empty({0}, f.options()) : at::empty({B, p_dim, p_dim}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "fastgeo::gauss_newton_system", [&] {
    const scalar_t* fp = f.data_ptr<scalar_t>();
    const scalar_t* jp = jac.data_ptr<scalar_t>();
    const scalar_t* sp = psiT.data_ptr<scalar_t>();
    scalar_t* gp = grad.data_ptr<scalar_t>();
    scalar_t* hp = grad_only ? nullptr : hess.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch;
      for (int64_t b = begin; b < end; ++b) {
        gauss_newton_curve<scalar_t>(fp + b * N * F, jp + b * N * d * F, sp, N, d, F, m, grad_only,
                                     gp + b * p_dim, grad_only ? nullptr : hp + b * p_dim * p_dim, scratch);
      }
    });
  });
  return {grad, hess};
}

}  // namespace
}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("gauss_newton_system", &fastgeo::cpu::gauss_newton_system_cpu);
}
