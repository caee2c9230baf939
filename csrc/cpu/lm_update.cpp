// lm_update on the CPU, one curve per task: acceptance, structured secant update, Nielsen damping and the
// convergence test, as lm_update in fastgeo/reference/levenberg_marquardt.py.
#include <torch/library.h>

#include <vector>

#include "common.h"
#include "lm_state.h"
#include "secant_update.h"

namespace fastgeo {
namespace cpu {
namespace {

// Nielsen's factor for lam after an accepted step: small when the model predicted the gain well.
template <typename T>
T nielsen_shrink(T gain, T predicted) {
  const T tiny = std::numeric_limits<T>::min();
  const T rho = gain / (predicted < tiny ? tiny : predicted);
  const T r1 = rho > T(1) ? T(1) : rho;
  const T cube = (T(2) * r1 - T(1)) * (T(2) * r1 - T(1)) * (T(2) * r1 - T(1));
  const T shrink_raw = T(1) - cube;
  return shrink_raw < T(1) / T(3) ? T(1) / T(3) : shrink_raw;
}

// What lm_update reports for one curve: accept, status (0 iterating, 1 converged, 2 stalled), ok.
struct LMVerdict {
  bool accept;
  int8_t status;
  bool ok;
};

// One curve: the state s is updated in place. tol and loose_tol = length_tol_factor * tol are in
// the state's dtype; work holds y and y_sharp (2 p), scratch is the secant update's.
template <typename T>
LMVerdict update_curve(const LMCurveState<T>& s, const LMCurveTrial<T>& t, int64_t p, T tol, T loose_tol,
                       std::vector<T>& work, std::vector<T>& scratch) {
  const T e_old = s.e, e_try = t.e_new;
  const bool accept = e_try < e_old;
  const T gain = e_old - e_try;
  const T rel = gain / e_old;
  const T rel_len = std::abs(t.l_new - s.length) / s.length;
  if (accept) {
    work.resize(2 * p);
    T* y = work.data();  // gradient change
    T* y_sharp = y + p;  // (J_new - J_old)^T r_new
    for (int64_t i = 0; i < p; ++i) {
      y[i] = t.g_new[i] - s.grad[i];
      y_sharp[i] = t.g_new[i] - t.g_old_jac[i];
    }
    secant_update(s.curv, t.step, y, y_sharp, p, scratch);
    std::copy(t.g_new, t.g_new + p, s.grad);
    std::copy(t.h_new, t.h_new + p * p, s.hess);
    s.e = e_try;
    s.length = t.l_new;
  }
  bool finite = true;
  for (int64_t i = 0; i < p; ++i) finite = finite && std::isfinite(s.grad[i]);
  for (int64_t q = 0; q < p * p; ++q) finite = finite && std::isfinite(s.hess[q]);
  const T shrink = nielsen_shrink(gain, t.predicted);
  if (accept) {
    const T shrunk = s.lam * shrink;
    s.lam = shrunk < T(1e-12) ? T(1e-12) : shrunk;
    s.nu = T(2);
  } else {
    s.lam = s.lam * s.nu;
    s.nu = s.nu * T(2);
  }
  // Converged: an accepted step gained < tol relative, or the model predicts no gain. Stalled:
  // steps keep failing although the model predicts a gain (lam blew up).
  const bool settled = rel < tol || (rel_len < tol && rel < loose_tol);
  const bool converged = (accept && settled) || (t.solved && t.predicted <= tol * s.e);
  const bool stalled = !accept && s.lam > T(1e10);
  return {accept, static_cast<int8_t>(converged ? 1 : (stalled ? 2 : 0)), finite};
}

std::vector<at::Tensor> lm_update_cpu(const at::Tensor& e, const at::Tensor& length, const at::Tensor& e_new,
                                      const at::Tensor& l_new, const at::Tensor& grad, const at::Tensor& g_new,
                                      const at::Tensor& g_old_jac, const at::Tensor& hess, const at::Tensor& h_new,
                                      const at::Tensor& curv, const at::Tensor& step, const at::Tensor& predicted,
                                      const at::Tensor& solved, const at::Tensor& lam, const at::Tensor& nu,
                                      double tol, double length_tol_factor) {
  const LMTrial trial = lm_trial(grad, e_new, l_new, g_new, g_old_jac, h_new, step, predicted, solved);
  LMState state = lm_state_copy(e, length, grad, hess, curv, lam, nu);
  const int64_t B = grad.size(0), p = grad.size(1);
  at::Tensor accept = at::empty({B}, trial.solved.options());
  at::Tensor status = at::empty({B}, trial.solved.options().dtype(at::kChar));
  at::Tensor ok = at::empty({B}, trial.solved.options());
  AT_DISPATCH_FLOATING_TYPES(state.grad.scalar_type(), "fastgeo::lm_update", [&] {
    using T = scalar_t;
    const LMStateData<T> sd(state);
    const LMTrialData<T> td(trial);
    bool* acc_p = accept.data_ptr<bool>();
    int8_t* status_p = status.data_ptr<int8_t>();
    bool* ok_p = ok.data_ptr<bool>();
    const T tol_t = T(tol), loose_tol = T(length_tol_factor * tol);
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      std::vector<T> work, scratch;
      for (int64_t b = begin; b < end; ++b) {
        const LMVerdict v = update_curve(sd.curve(b), td.curve(b), p, tol_t, loose_tol, work, scratch);
        acc_p[b] = v.accept;
        status_p[b] = v.status;
        ok_p[b] = v.ok;
      }
    });
  });
  return {accept, status, ok, state.e, state.length, state.grad, state.hess, state.curv, state.lam, state.nu};
}

}  // namespace
}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("lm_update", &fastgeo::cpu::lm_update_cpu);
}
