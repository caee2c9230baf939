// Schemas of the torch.ops.fastgeo operators (DESIGN §2) and the Python module init of
// fastgeo._C. Kernels register per dispatch key in csrc/cpu/*.cpp (and csrc/cuda/ for CUDA);
// autograd and fake (meta) implementations are registered from Python in fastgeo/ops/library.py.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fastgeo, m) {
  // z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> beta (P, D)
  m.def("rbf_precision(Tensor z, Tensor centers, Tensor gammas, Tensor weights, Tensor zeta) -> Tensor");
  // -> (grad_z, grad_centers, grad_gammas, grad_weights, grad_zeta); an output whose
  // output_mask entry is false is an empty tensor of shape (0,) and costs nothing.
  m.def(
      "rbf_precision_backward(Tensor grad, Tensor z, Tensor centers, Tensor gammas, Tensor weights, "
      "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // x (B, N, D) -> (B, N-1)
  m.def("segment_sqdist(Tensor x) -> Tensor");
  // grad (B, N-1), x (B, N, D) -> grad_x (B, N, D)
  m.def("segment_sqdist_backward(Tensor grad, Tensor x) -> Tensor");
  // points (B, N, d), RBF parameters as above -> (B, N-1); never holds a (B, N, D) tensor
  m.def(
      "rbf_segment_sqdist(Tensor points, Tensor centers, Tensor gammas, Tensor weights, Tensor zeta) "
      "-> Tensor");
  // -> (grad_points, grad_centers, grad_gammas, grad_weights, grad_zeta), masked as above
  m.def(
      "rbf_segment_sqdist_backward(Tensor grad, Tensor points, Tensor centers, Tensor gammas, "
      "Tensor weights, Tensor zeta, bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // sigma = (W phi(z) + zeta)^-1/2 (P, D) and its transposed Jacobian (P, d, D), fused; for the
  // solver (not differentiable: the reference in fastgeo/reference/ is)
  m.def(
      "rbf_sigma_jacobian(Tensor z, Tensor centers, Tensor gammas, Tensor weights, Tensor zeta) "
      "-> (Tensor, Tensor)");
  // The solver's linear system: features f (B, N, F), transposed Jacobians jac (B, N, d, F),
  // curve basis psi (N, m) -> gradient (B, m d) and Gauss-Newton matrix (B, m d, m d) of
  // sum_n ||f_{n+1} - f_n||^2 / 2 in the basis coefficients; the matrix is (0,) if grad_only.
  // Not differentiable (the solver runs it under no_grad).
  m.def("gauss_newton_system(Tensor f, Tensor jac, Tensor psi, bool grad_only) -> (Tensor, Tensor)");
  // One Levenberg-Marquardt iteration of the solver (fastgeo/reference/levenberg_marquardt.py), per curve:
  // grad (B, p), hess and curv (B, p, p), lam (B,) -> step (B, p), predicted (B,), solved (B,) bool
  m.def("lm_propose(Tensor grad, Tensor hess, Tensor curv, Tensor lam, int segments) -> (Tensor, Tensor, Tensor)");
  // The same step without a secant model for hess block-banded (blocks of `block` unknowns, half-bandwidth
  // `band` blocks; entries outside the band are not read): grad (B, p), hess (B, p, p), lam (B,)
  m.def(
      "banded_lm_propose(Tensor grad, Tensor hess, Tensor lam, int segments, int block, int band) "
      "-> (Tensor, Tensor, Tensor)");
  // -> [accept (B,) bool, status (B,) int8 (0 iterating, 1 converged, 2 stalled), ok (B,) bool,
  //     e, length, grad, hess, curv, lam, nu] (the updated state)
  m.def(
      "lm_update(Tensor e, Tensor length, Tensor e_new, Tensor l_new, Tensor grad, Tensor g_new, "
      "Tensor g_old_jac, Tensor hess, Tensor h_new, Tensor curv, Tensor step, Tensor predicted, "
      "Tensor solved, Tensor lam, Tensor nu, float tol, float length_tol_factor) -> Tensor[]");
}

// `import fastgeo._C` loads this library, which runs the registrations above; the module itself
// is empty (the operators live in torch.ops.fastgeo).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "fastgeo C++ operators (registered in torch.ops.fastgeo)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
