// rbf_sigma_jacobian on the CPU: sigma = beta^-1/2 and its transposed Jacobian, fused, a tile of
// rows of z at a time:
//
//   beta = W phi + zeta,   d beta / d z_i = W (phi * -2 gamma (z_i - c_i)),
//   d sigma / d z_i = -1/2 sigma / beta * d beta / d z_i.
//
// Per tile of R rows, the d + 1 matrices phi and phi * -2 gamma (z_i - c_i) (R x K each) are
// stacked into one per-thread buffer and multiplied by W^T in a single BLAS call; a last pass
// turns the (d + 1) R x D product into sigma and the Jacobian rows while it is still in cache.
// The PyTorch reference (fastgeo/reference.py) materializes each intermediate in turn.
#include <torch/library.h>

#include <vector>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

template <typename T>
void rbf_sigma_jacobian_kernel(const at::Tensor& z, const at::Tensor& cT, const at::Tensor& gammas,
                               const at::Tensor& weights, const at::Tensor& zeta, at::Tensor& sigma,
                               at::Tensor& jac) {
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows((d + 1) * std::max(D, K), sizeof(T), 16, 256);
  const int64_t tiles = (P + R - 1) / R;
  const T* zp = z.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const T* zetap = zeta.data_ptr<T>();
  T* sp = sigma.data_ptr<T>();
  T* jp = jac.data_ptr<T>();
  const at::Tensor Wt = weights.t();  // (K, D) view; BLAS reads it transposed, no copy
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    const int64_t held = std::min(R, P);  // a tile's rows: no more than there are
    at::Tensor a = at::empty({(d + 1) * held, K}, z.options());   // blocks: phi, then one per axis
    at::Tensor prod = at::empty({(d + 1) * held, D}, z.options());  // the same blocks times W^T
    T* ap = a.data_ptr<T>();
    std::vector<T> scale_buf(D);
    T* scale = scale_buf.data();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r0 = t * R, rows = std::min(R, P - r0);
      rbf_features<T>(zp + r0 * d, rows, d, cp, gp, K, ap);
      for (int64_t r = 0; r < rows; ++r) {
        const T* phi = ap + r * K;
        const T* zr = zp + (r0 + r) * d;
        for (int64_t i = 0; i < d; ++i) {
          T* out = ap + ((i + 1) * rows + r) * K;
          const T zi = zr[i];
          const T* ci = cp + i * K;
#pragma omp simd
          for (int64_t k = 0; k < K; ++k) out[k] = T(-2) * gp[k] * phi[k] * (zi - ci[k]);
        }
      }
      at::Tensor p = prod.narrow(0, 0, (d + 1) * rows);
      at::mm_out(p, a.narrow(0, 0, (d + 1) * rows), Wt);
      const T* pp = p.data_ptr<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const T* beta_part = pp + r * D;
        T* srow = sp + (r0 + r) * D;
        T* jrow = jp + (r0 + r) * d * D;
        std::copy(beta_part, beta_part + D, srow);
        add_rsqrt(srow, zetap, D);  // sigma
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) scale[j] = T(-0.5) * srow[j] / (beta_part[j] + zetap[j]);
        for (int64_t i = 0; i < d; ++i) {
          const T* dbeta = pp + ((i + 1) * rows + r) * D;
          T* out = jrow + i * D;
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) out[j] = scale[j] * dbeta[j];
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rbf_sigma_jacobian_cpu(const at::Tensor& z_in, const at::Tensor& centers_in,
                                                         const at::Tensor& gammas_in, const at::Tensor& weights_in,
                                                         const at::Tensor& zeta_in) {
  TORCH_CHECK_VALUE(z_in.dim() == 2, "z must be (P, d), got ", z_in.sizes());
  check_rbf_params(z_in, "z", centers_in, gammas_in, weights_in);
  check_zeta(zeta_in, weights_in);
  const at::Tensor z = plain(z_in), gammas = plain(gammas_in), weights = plain(weights_in),
                   zeta = plain(zeta_in);
  const at::Tensor cT = centers_t(centers_in);
  const int64_t P = z.size(0), d = z.size(1), D = weights.size(0);
  at::Tensor sigma = at::empty({P, D}, z.options());
  at::Tensor jac = at::empty({P, d, D}, z.options());
  if (P == 0) return {sigma, jac};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo::rbf_sigma_jacobian", [&] {
    rbf_sigma_jacobian_kernel<scalar_t>(z, cT, gammas, weights, zeta, sigma, jac);
  });
  return {sigma, jac};
}

}  // namespace
}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("rbf_sigma_jacobian", &fastgeo::cpu::rbf_sigma_jacobian_cpu);
}
