// The tensors of an lm_propose / lm_update call: checked here, once, then gathered into structs and
// per-curve views, so that the kernels do not pass the schema's 17 loose arguments around.
#pragma once

#include <tuple>
#include <vector>

#include <initializer_list>

#include "common.h"

namespace fastgeo {
namespace cpu {

// An argument's layout: (B,), (B, p) or (B, p, p) in grad's dtype, or a (B,) bool flag.
enum class LMLayout { kScalar, kVector, kMatrix, kFlag };

struct LMArg {
  const at::Tensor& t;
  const char* name;
  LMLayout layout;
};

// Checks grad (B, p), float32 or float64, then each argument against it; errors name the argument.
inline void check_lm_args(const at::Tensor& grad, std::initializer_list<LMArg> args) {
  TORCH_CHECK_VALUE(grad.dim() == 2, "grad must be (B, p), got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kDouble,
                   "grad must be float32 or float64, got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device().is_cpu(), "fastgeo CPU kernel got grad on ", grad.device());
  const int64_t B = grad.size(0), p = grad.size(1);
  for (const LMArg& a : args) {
    const at::Tensor& t = a.t;
    switch (a.layout) {
      case LMLayout::kScalar:
      case LMLayout::kFlag:
        TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == B, a.name, " must be (B,) with B = ", B, ", got ",
                          t.sizes());
        break;
      case LMLayout::kVector:
        TORCH_CHECK_VALUE(t.sizes() == grad.sizes(), a.name, " must be (B, p) like grad ", grad.sizes(),
                          ", got ", t.sizes());
        break;
      case LMLayout::kMatrix:
        TORCH_CHECK_VALUE(t.dim() == 3 && t.size(0) == B && t.size(1) == p && t.size(2) == p, a.name,
                          " must be (B, p, p) = (", B, ", ", p, ", ", p, "), got ", t.sizes());
        break;
    }
    if (a.layout == LMLayout::kFlag) {
      TORCH_CHECK_TYPE(t.scalar_type() == at::kBool, a.name, " must be a bool tensor, got ", t.scalar_type());
    } else {
      TORCH_CHECK_TYPE(t.scalar_type() == grad.scalar_type(), a.name, " must have grad's dtype ",
                       grad.scalar_type(), ", got ", t.scalar_type());
    }
    TORCH_CHECK_VALUE(t.device().is_cpu(), "fastgeo CPU kernel got ", a.name, " on ", t.device());
  }
}

// The solver's state of B curves with p unknowns: energy e and length (B,), the Gauss-Newton
// gradient grad (B, p) and matrix hess (B, p, p), the secant model curv (B, p, p) of the residual
// curvature, the damping lam and its growth factor nu (B,).
struct LMState {
  at::Tensor e, length, grad, hess, curv, lam, nu;
};

// A trial step and what was measured at its points: energy e_new and length l_new (B,), the
// Gauss-Newton system g_new (B, p), h_new (B, p, p), the gradient with the current Jacobians
// g_old_jac (B, p); and from lm_propose the step (B, p), its predicted decrease (B,), solved (B,) bool.
struct LMTrial {
  at::Tensor e_new, l_new, g_new, g_old_jac, h_new, step, predicted, solved;
};

// The state, checked, as contiguous copies outside autograd: lm_update's outputs, updated in place.
inline LMState lm_state_copy(const at::Tensor& e, const at::Tensor& length, const at::Tensor& grad,
                             const at::Tensor& hess, const at::Tensor& curv, const at::Tensor& lam,
                             const at::Tensor& nu) {
  check_lm_args(grad, {{e, "e", LMLayout::kScalar},
                       {length, "length", LMLayout::kScalar},
                       {hess, "hess", LMLayout::kMatrix},
                       {curv, "curv", LMLayout::kMatrix},
                       {lam, "lam", LMLayout::kScalar},
                       {nu, "nu", LMLayout::kScalar}});
  const auto copy = [](const at::Tensor& t) { return t.detach().clone(at::MemoryFormat::Contiguous); };
  return {copy(e), copy(length), copy(grad), copy(hess), copy(curv), copy(lam), copy(nu)};
}

// The trial, checked against the state's grad, as contiguous read-only tensors.
inline LMTrial lm_trial(const at::Tensor& grad, const at::Tensor& e_new, const at::Tensor& l_new,
                        const at::Tensor& g_new, const at::Tensor& g_old_jac, const at::Tensor& h_new,
                        const at::Tensor& step, const at::Tensor& predicted, const at::Tensor& solved) {
  check_lm_args(grad, {{e_new, "e_new", LMLayout::kScalar},
                       {l_new, "l_new", LMLayout::kScalar},
                       {g_new, "g_new", LMLayout::kVector},
                       {g_old_jac, "g_old_jac", LMLayout::kVector},
                       {h_new, "h_new", LMLayout::kMatrix},
                       {step, "step", LMLayout::kVector},
                       {predicted, "predicted", LMLayout::kScalar},
                       {solved, "solved", LMLayout::kFlag}});
  return {plain(e_new), plain(l_new), plain(g_new), plain(g_old_jac),
          plain(h_new), plain(step),  plain(predicted), plain(solved)};
}

// One curve's slice of an LMState, written in place: scalars by reference, arrays by pointer.
template <typename T>
struct LMCurveState {
  T& e;
  T& length;
  T* grad;
  T* hess;
  T* curv;
  T& lam;
  T& nu;
};

// One curve's slice of an LMTrial, read only.
template <typename T>
struct LMCurveTrial {
  T e_new, l_new;
  const T* g_new;
  const T* g_old_jac;
  const T* h_new;
  const T* step;
  T predicted;
  bool solved;
};

// Data pointers of a contiguous LMState / LMTrial, taken once outside the parallel loop;
// curve(b) is curve b's view.
template <typename T>
struct LMStateData {
  explicit LMStateData(const LMState& s)
      : p(s.grad.size(1)), e(s.e.data_ptr<T>()), length(s.length.data_ptr<T>()), grad(s.grad.data_ptr<T>()),
        hess(s.hess.data_ptr<T>()), curv(s.curv.data_ptr<T>()), lam(s.lam.data_ptr<T>()), nu(s.nu.data_ptr<T>()) {}
  LMCurveState<T> curve(int64_t b) const {
    return {e[b], length[b], grad + b * p, hess + b * p * p, curv + b * p * p, lam[b], nu[b]};
  }
  int64_t p;
  T *e, *length, *grad, *hess, *curv, *lam, *nu;
};

template <typename T>
struct LMTrialData {
  explicit LMTrialData(const LMTrial& t)
      : p(t.g_new.size(1)), e_new(t.e_new.data_ptr<T>()), l_new(t.l_new.data_ptr<T>()),
        g_new(t.g_new.data_ptr<T>()), g_old_jac(t.g_old_jac.data_ptr<T>()), h_new(t.h_new.data_ptr<T>()),
        step(t.step.data_ptr<T>()), predicted(t.predicted.data_ptr<T>()), solved(t.solved.data_ptr<bool>()) {}
  LMCurveTrial<T> curve(int64_t b) const {
    return {e_new[b], l_new[b], g_new + b * p, g_old_jac + b * p, h_new + b * p * p, step + b * p,
            predicted[b], solved[b]};
  }
  int64_t p;
  const T *e_new, *l_new, *g_new, *g_old_jac, *h_new, *step, *predicted;
  const bool* solved;
};

// The outputs of a damped step for grad (B, p), step (B, p), predicted (B,) and solved (B,) bool,
// filled curve by curve by propose(b, step_b, predicted_b, solved_b, scratch) on parallel tasks of
// `grain` curves (scratch: one vector per task, for the curve's system). `blas`: propose calls
// ATen's BLAS, whose results may depend on its thread count: the curves then always run inside a
// parallel region where there are threads (even a batch of one), so BLAS runs on one thread for
// every curve alone or in a batch.
template <typename T, typename F>
std::tuple<at::Tensor, at::Tensor, at::Tensor> propose_each_curve(const at::Tensor& grad, int64_t grain,
                                                                 const F& propose, bool blas = false) {
  const int64_t B = grad.size(0), p = grad.size(1);
  at::Tensor step = at::empty({B, p}, grad.options());
  at::Tensor predicted = at::empty({B}, grad.options());
  at::Tensor solved = at::empty({B}, grad.options().dtype(at::kBool));
  T* st = step.data_ptr<T>();
  T* pr = predicted.data_ptr<T>();
  bool* so = solved.data_ptr<bool>();
  const int64_t tasks = blas ? std::max<int64_t>(B, 2 * grain) : B;
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t b = begin; b < std::min(end, B); ++b) propose(b, st + b * p, pr + b, so + b, scratch);
  });
  return {step, predicted, solved};
}

}  // namespace cpu
}  // namespace fastgeo
