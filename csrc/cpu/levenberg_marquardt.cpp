// One Levenberg-Marquardt iteration of the geodesic solver on the CPU, one curve per task:
// lm_propose (damped step and predicted decrease) and lm_update (acceptance, structured secant
// update, Nielsen damping, convergence). The formulas, and the PyTorch oracle they are tested
// against, are in fastgeo/levenberg_marquardt.py; this file follows it line by line. The systems
// are small (p = m d unknowns, p <= 64 by the Python dispatcher): a plain Cholesky in the
// thread's cache replaces dozens of batched PyTorch operations per iteration.
#include <torch/library.h>

#include <vector>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

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

template <typename T>
void matvec(const T* a, const T* x, int64_t p, T* out) {
  for (int64_t i = 0; i < p; ++i) {
    T acc = T(0);
    for (int64_t k = 0; k < p; ++k) acc += a[i * p + k] * x[k];
    out[i] = acc;
  }
}

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

// Dennis-Gay-Welsch update of curv (p x p, in place) from step s, gradient change y and
// y_sharp = (J_new - J_old)^T r_new, with Oren-Luenberger sizing.
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> lm_propose_cpu(const at::Tensor& grad_in, const at::Tensor& hess_in,
                                                             const at::Tensor& curv_in, const at::Tensor& lam_in,
                                                             int64_t segments) {
  TORCH_CHECK(grad_in.dim() == 2, "grad must be (B, p), got ", grad_in.sizes());
  const int64_t B = grad_in.size(0), p = grad_in.size(1);
  TORCH_CHECK(hess_in.dim() == 3 && hess_in.size(0) == B && hess_in.size(1) == p && hess_in.size(2) == p,
              "hess must be (B, p, p) = (", B, ", ", p, ", ", p, "), got ", hess_in.sizes());
  TORCH_CHECK(curv_in.sizes() == hess_in.sizes(), "curv must have hess's shape ", hess_in.sizes(), ", got ",
              curv_in.sizes());
  TORCH_CHECK(lam_in.dim() == 1 && lam_in.size(0) == B, "lam must be (B,) with B = ", B, ", got ", lam_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == at::kFloat || grad_in.scalar_type() == at::kDouble,
              "grad must be float32 or float64, got ", grad_in.scalar_type());
  for (const at::Tensor* t : {&hess_in, &curv_in, &lam_in}) {
    TORCH_CHECK(t->scalar_type() == grad_in.scalar_type(), "fastgeo: all tensors must share grad's dtype ",
                grad_in.scalar_type(), ", got ", t->scalar_type());
  }
  for (const at::Tensor* t : {&grad_in, &hess_in, &curv_in, &lam_in}) {
    TORCH_CHECK(t->device().is_cpu(), "fastgeo CPU kernel got a tensor on ", t->device());
  }
  const at::Tensor grad = plain(grad_in), hess = plain(hess_in), curv = plain(curv_in), lam = plain(lam_in);
  at::Tensor step = at::empty({B, p}, grad.options());
  at::Tensor predicted = at::empty({B}, grad.options());
  at::Tensor solved = at::empty({B}, grad.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgeo::lm_propose", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* h = hess.data_ptr<scalar_t>();
    const scalar_t* c = curv.data_ptr<scalar_t>();
    const scalar_t* l = lam.data_ptr<scalar_t>();
    scalar_t* st = step.data_ptr<scalar_t>();
    scalar_t* pr = predicted.data_ptr<scalar_t>();
    bool* so = solved.data_ptr<bool>();
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch;
      for (int64_t b = begin; b < end; ++b) {
        propose_curve<scalar_t>(g + b * p, h + b * p * p, c + b * p * p, l[b], p, double(segments), st + b * p,
                                pr + b, so + b, scratch);
      }
    });
  });
  return {step, predicted, solved};
}

std::vector<at::Tensor> lm_update_cpu(const at::Tensor& e_in, const at::Tensor& length_in, const at::Tensor& e_new_in,
                                      const at::Tensor& l_new_in, const at::Tensor& grad_in, const at::Tensor& g_new_in,
                                      const at::Tensor& g_old_in, const at::Tensor& hess_in, const at::Tensor& h_new_in,
                                      const at::Tensor& curv_in, const at::Tensor& step_in,
                                      const at::Tensor& predicted_in, const at::Tensor& solved_in,
                                      const at::Tensor& lam_in, const at::Tensor& nu_in, double tol,
                                      double length_tol_factor) {
  TORCH_CHECK(grad_in.dim() == 2, "grad must be (B, p), got ", grad_in.sizes());
  const int64_t B = grad_in.size(0), p = grad_in.size(1);
  TORCH_CHECK(grad_in.scalar_type() == at::kFloat || grad_in.scalar_type() == at::kDouble,
              "grad must be float32 or float64, got ", grad_in.scalar_type());
  const std::pair<const at::Tensor*, const char*> vectors[] = {
      {&e_in, "e"}, {&length_in, "length"}, {&e_new_in, "e_new"}, {&l_new_in, "l_new"},
      {&predicted_in, "predicted"}, {&lam_in, "lam"}, {&nu_in, "nu"}};
  for (const auto& [t, name] : vectors) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == B, name, " must be (B,) with B = ", B, ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == grad_in.scalar_type(), name, " must have grad's dtype ",
                grad_in.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device().is_cpu(), "fastgeo CPU kernel got ", name, " on ", t->device());
  }
  TORCH_CHECK(solved_in.dim() == 1 && solved_in.size(0) == B && solved_in.scalar_type() == at::kBool,
              "solved must be a (B,) bool tensor, got ", solved_in.sizes(), " ", solved_in.scalar_type());
  for (const auto& [t, name] : {std::pair<const at::Tensor*, const char*>{&g_new_in, "g_new"},
                                {&g_old_in, "g_old_jac"}, {&step_in, "step"}}) {
    TORCH_CHECK(t->sizes() == grad_in.sizes() && t->scalar_type() == grad_in.scalar_type(), name,
                " must be like grad ", grad_in.sizes(), ", got ", t->sizes(), " ", t->scalar_type());
  }
  for (const auto& [t, name] : {std::pair<const at::Tensor*, const char*>{&hess_in, "hess"},
                                {&h_new_in, "h_new"}, {&curv_in, "curv"}}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == B && t->size(1) == p && t->size(2) == p &&
                    t->scalar_type() == grad_in.scalar_type(),
                name, " must be (B, p, p) = (", B, ", ", p, ", ", p, ") of grad's dtype, got ", t->sizes());
  }
  for (const at::Tensor* t : {&grad_in, &g_new_in, &g_old_in, &hess_in, &h_new_in, &curv_in, &step_in, &solved_in}) {
    TORCH_CHECK(t->device().is_cpu(), "fastgeo CPU kernel got a tensor on ", t->device());
  }
  const at::Tensor solved = plain(solved_in), step = plain(step_in), g_new = plain(g_new_in),
                   g_old = plain(g_old_in), h_new = plain(h_new_in), e_new = plain(e_new_in),
                   l_new = plain(l_new_in), predicted = plain(predicted_in);
  // The outputs start as copies of the current state and are updated in place.
  at::Tensor e = e_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor length = length_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor grad = grad_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor hess = hess_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor curv = curv_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor lam = lam_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor nu = nu_in.detach().clone(at::MemoryFormat::Contiguous);
  at::Tensor accept = at::empty({B}, solved.options());
  at::Tensor done = at::empty({B}, solved.options());
  at::Tensor ok = at::empty({B}, solved.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgeo::lm_update", [&] {
    using T = scalar_t;
    T* e_p = e.data_ptr<T>();
    T* len_p = length.data_ptr<T>();
    T* g_p = grad.data_ptr<T>();
    T* h_p = hess.data_ptr<T>();
    T* c_p = curv.data_ptr<T>();
    T* lam_p = lam.data_ptr<T>();
    T* nu_p = nu.data_ptr<T>();
    const T* en_p = e_new.data_ptr<T>();
    const T* ln_p = l_new.data_ptr<T>();
    const T* gn_p = g_new.data_ptr<T>();
    const T* go_p = g_old.data_ptr<T>();
    const T* hn_p = h_new.data_ptr<T>();
    const T* s_p = step.data_ptr<T>();
    const T* pr_p = predicted.data_ptr<T>();
    const bool* so_p = solved.data_ptr<bool>();
    bool* acc_p = accept.data_ptr<bool>();
    bool* done_p = done.data_ptr<bool>();
    bool* ok_p = ok.data_ptr<bool>();
    const T tiny = std::numeric_limits<T>::min();
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      std::vector<T> y(p), y_sharp(p), scratch;
      for (int64_t b = begin; b < end; ++b) {
        const T e_old = e_p[b], e_try = en_p[b];
        const bool acc = e_try < e_old;
        const T gain = e_old - e_try;
        const T rel = gain / e_old;
        const T rel_len = std::abs(ln_p[b] - len_p[b]) / len_p[b];
        T* g = g_p + b * p;
        T* h = h_p + b * p * p;
        if (acc) {
          const T* gn = gn_p + b * p;
          const T* go = go_p + b * p;
          for (int64_t i = 0; i < p; ++i) {
            y[i] = gn[i] - g[i];
            y_sharp[i] = gn[i] - go[i];
          }
          secant_update(c_p + b * p * p, s_p + b * p, y.data(), y_sharp.data(), p, scratch);
          std::copy(gn, gn + p, g);
          std::copy(hn_p + b * p * p, hn_p + (b + 1) * p * p, h);
          e_p[b] = e_try;
          len_p[b] = ln_p[b];
        }
        bool finite = true;
        for (int64_t i = 0; i < p; ++i) finite = finite && std::isfinite(g[i]);
        for (int64_t q = 0; q < p * p; ++q) finite = finite && std::isfinite(h[q]);
        const T pred = pr_p[b];
        const T rho = gain / (pred < tiny ? tiny : pred);
        const T r1 = rho > T(1) ? T(1) : rho;
        const T cube = (T(2) * r1 - T(1)) * (T(2) * r1 - T(1)) * (T(2) * r1 - T(1));
        const T shrink_raw = T(1) - cube;
        const T shrink = shrink_raw < T(1) / T(3) ? T(1) / T(3) : shrink_raw;
        if (acc) {
          const T shrunk = lam_p[b] * shrink;
          lam_p[b] = shrunk < T(1e-12) ? T(1e-12) : shrunk;
          nu_p[b] = T(2);
        } else {
          lam_p[b] = lam_p[b] * nu_p[b];
          nu_p[b] = nu_p[b] * T(2);
        }
        const bool stalled = !acc && lam_p[b] > T(1e10);
        const bool settled = rel < T(tol) || (rel_len < T(tol) && rel < T(length_tol_factor * tol));
        done_p[b] = (acc && settled) || (so_p[b] && pred <= T(tol) * e_p[b]) || stalled;
        acc_p[b] = acc;
        ok_p[b] = finite;
      }
    });
  });
  return {accept, done, ok, e, length, grad, hess, curv, lam, nu};
}

}  // namespace
}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("lm_propose", &fastgeo::cpu::lm_propose_cpu);
  m.impl("lm_update", &fastgeo::cpu::lm_update_cpu);
}
