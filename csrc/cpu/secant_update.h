// The structured secant update of lm_update: the model S of the residual curvature that Gauss-Newton
// leaves out, kept per curve; secant_update in fastgeo/reference/levenberg_marquardt.py, one curve.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "dense_algebra.h"

namespace fastgeo {
namespace cpu {

// Dennis-Gay-Welsch update of curv (p x p, in place) from step s, gradient change y and
// y_sharp = (J_new - J_old)^T r_new, with Oren-Luenberger sizing; skipped where y . s <= 0.
template <typename T>
void secant_update(T* curv, const T* s, const T* y, const T* y_sharp, int64_t p, std::vector<T>& scratch) {
  scratch.resize(2 * p);
  T* cs = scratch.data();
  T* resid = cs + p;
  T ys = T(0), yy = T(0), ss = T(0), s_ysharp = T(0);
  for (int64_t i = 0; i < p; ++i) {
    ys += y[i] * s[i];
    yy += y[i] * y[i];
    ss += s[i] * s[i];
    s_ysharp += s[i] * y_sharp[i];
  }
  const bool ok = ys > T(1e-12) * std::sqrt(yy) * std::sqrt(ss);
  matvec(curv, s, p, cs);
  T s_curv_s = T(0);
  for (int64_t i = 0; i < p; ++i) s_curv_s += s[i] * cs[i];
  if (s_curv_s != T(0)) {
    const T tiny = T(1e-300);  // 0 in float32, as in the reference
    const T denom = std::abs(s_curv_s) < tiny ? tiny : std::abs(s_curv_s);
    T size = std::abs(s_ysharp) / denom;
    size = size > T(1) ? T(1) : size;
    for (int64_t q = 0; q < p * p; ++q) curv[q] *= size;
    for (int64_t i = 0; i < p; ++i) cs[i] *= size;
  }
  if (!ok) return;
  T rs = T(0);
  for (int64_t i = 0; i < p; ++i) {
    resid[i] = y_sharp[i] - cs[i];
    rs += resid[i] * s[i];
  }
  const T c2 = rs / (ys * ys);
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t k = 0; k < p; ++k) {
      curv[i * p + k] += (resid[i] * y[k] + y[i] * resid[k]) / ys - c2 * (y[i] * y[k]);
    }
  }
}

}  // namespace cpu
}  // namespace fastgeo
