// Small dense linear algebra on row-major p x p arrays, for the per-curve systems of the
// Levenberg-Marquardt kernels (p <= 64): plain loops in one thread's cache, no LAPACK call per curve.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastgeo {
namespace cpu {

// In-place lower Cholesky factor of the p x p matrix a (row-major); false if not positive
// definite (or not finite) at this precision.
template <typename T>
bool cholesky(T* a, int64_t p) {
  for (int64_t j = 0; j < p; ++j) {
    T diag = a[j * p + j];
    for (int64_t k = 0; k < j; ++k) diag -= a[j * p + k] * a[j * p + k];
    if (!(diag > T(0))) return false;  // also catches NaN
    const T ljj = std::sqrt(diag);
    a[j * p + j] = ljj;
    for (int64_t i = j + 1; i < p; ++i) {
      T v = a[i * p + j];
      for (int64_t k = 0; k < j; ++k) v -= a[i * p + k] * a[j * p + k];
      a[i * p + j] = v / ljj;
    }
  }
  return true;
}

// x = -(L L^T)^{-1} g.
template <typename T>
void cholesky_solve_neg(const T* l, const T* g, int64_t p, T* x) {
  for (int64_t i = 0; i < p; ++i) {
    T v = -g[i];
    for (int64_t k = 0; k < i; ++k) v -= l[i * p + k] * x[k];
    x[i] = v / l[i * p + i];
  }
  for (int64_t i = p - 1; i >= 0; --i) {
    T v = x[i];
    for (int64_t k = i + 1; k < p; ++k) v -= l[k * p + i] * x[k];
    x[i] = v / l[i * p + i];
  }
}

// out = a x.
template <typename T>
void matvec(const T* a, const T* x, int64_t p, T* out) {
  for (int64_t i = 0; i < p; ++i) {
    T acc = T(0);
    for (int64_t k = 0; k < p; ++k) acc += a[i * p + k] * x[k];
    out[i] = acc;
  }
}

}  // namespace cpu
}  // namespace fastgeo
