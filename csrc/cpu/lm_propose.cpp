// lm_propose on the CPU, one curve per task: the damped Levenberg-Marquardt step and its predicted decrease,
// as propose_reference in fastgeo/reference/levenberg_marquardt.py, without its dozens of tiny batched ops.
#include <torch/library.h>

#include <vector>

#include "common.h"
#include "dense_algebra.h"
#include "lm_state.h"

namespace fastgeo {
namespace cpu {
namespace {

// (hess + curv + lam diag(scale)) step = -g with the Marquardt scaling floored; a zero step and
// solved = false where the factorization fails or the step is not finite.
template <typename T>
void propose_curve(const T* g, const T* hess, const T* curv, T lam, int64_t p, double segments, T* step,
                   T* predicted, bool* solved, std::vector<T>& scratch) {
  scratch.resize(2 * p * p + p);
  T* h = scratch.data();  // hess + curv
  T* sys = h + p * p;     // damped system, then its Cholesky factor
  T* hs = sys + p * p;    // h step
  T dmax = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < p; ++i) dmax = std::max(dmax, hess[i * p + i]);
  // clamp(min=1e-30) as in the reference (NaN stays NaN, then the factorization fails).
  const T floor = T(1e-12) * (dmax < T(1e-30) ? T(1e-30) : dmax);
  for (int64_t q = 0; q < p * p; ++q) {
    h[q] = hess[q] + curv[q];
    sys[q] = h[q];
  }
  for (int64_t i = 0; i < p; ++i) sys[i * p + i] += lam * (hess[i * p + i] + floor);
  bool ok = cholesky(sys, p);
  if (ok) {
    cholesky_solve_neg(sys, g, p, step);
    for (int64_t i = 0; i < p; ++i) ok = ok && std::isfinite(step[i]);
  }
  if (!ok) {
    for (int64_t i = 0; i < p; ++i) step[i] = T(0);
  }
  matvec(h, step, p, hs);
  T acc = T(0);
  for (int64_t i = 0; i < p; ++i) acc += (g[i] + T(0.5) * hs[i]) * step[i];
  *predicted = T(-segments) * acc;
  *solved = ok;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lm_propose_cpu(const at::Tensor& grad_in, const at::Tensor& hess_in,
                                                             const at::Tensor& curv_in, const at::Tensor& lam_in,
                                                             int64_t segments) {
  check_lm_args(grad_in, {{hess_in, "hess", LMLayout::kMatrix},
                          {curv_in, "curv", LMLayout::kMatrix},
                          {lam_in, "lam", LMLayout::kScalar}});
  const int64_t p = grad_in.size(1);
  const at::Tensor grad = plain(grad_in), hess = plain(hess_in), curv = plain(curv_in), lam = plain(lam_in);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgeo::lm_propose", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* h = hess.data_ptr<scalar_t>();
    const scalar_t* c = curv.data_ptr<scalar_t>();
    const scalar_t* l = lam.data_ptr<scalar_t>();
    out = propose_each_curve<scalar_t>(
        grad, 16, [&](int64_t b, scalar_t* st, scalar_t* pr, bool* so, std::vector<scalar_t>& scratch) {
          propose_curve<scalar_t>(g + b * p, h + b * p * p, c + b * p * p, l[b], p, double(segments), st, pr, so,
                                  scratch);
        });
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("lm_propose", &fastgeo::cpu::lm_propose_cpu);
}
