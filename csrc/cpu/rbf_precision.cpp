// rbf_precision on the CPU: beta = phi(z) W^T + zeta, a tile of rows of z at a time.
//
// Forward, per tile of R rows: phi (R, K) into a per-thread buffer, then one BLAS call writes
// zeta + phi W^T straight into the output rows (the tile is still in cache when the next
// tile starts), so the op is the (P x K) @ (K x D) GEMM plus a small exp pass.
// Backward, per tile (phi recomputed, cheap next to the GEMMs), with G = dL/dbeta:
//   grad_phi = G W (R, K),  h = grad_phi * phi,  grad_z / grad_centers / grad_gammas from h,
//   grad_weights += G^T phi,  grad_zeta += colsum(G)
// where the sums over rows go to per-chunk accumulators (one chunk per thread, reduced at the
// end), so the result does not depend on scheduling.
#include <array>

#include <torch/library.h>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

template <typename T>
void rbf_precision_kernel(const at::Tensor& z, const at::Tensor& cT, const at::Tensor& gammas,
                          const at::Tensor& weights, const at::Tensor& zeta, at::Tensor& out) {
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows(D, sizeof(T), 16, 512);
  const int64_t tiles = (P + R - 1) / R;
  const T* zp = z.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const at::Tensor Wt = weights.t();  // (K, D) view; BLAS reads it transposed, no copy
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    at::Tensor phi = at::empty({R, K}, z.options());
    T* phip = phi.data_ptr<T>();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r0 = t * R, rows = std::min(R, P - r0);
      rbf_features<T>(zp + r0 * d, rows, d, cp, gp, K, phip);
      at::Tensor o = out.narrow(0, r0, rows);
      at::addmm_out(o, zeta, phi.narrow(0, 0, rows), Wt);
    }
  });
}

template <typename T>
void rbf_precision_backward_kernel(const at::Tensor& G, const at::Tensor& z, const at::Tensor& cT,
                                   const at::Tensor& gammas, const at::Tensor& weights,
                                   const std::array<bool, 5>& mask, at::Tensor& gz, at::Tensor& gcT_acc,
                                   at::Tensor& gg_acc, at::Tensor& gW_acc, at::Tensor& gzeta_acc,
                                   int64_t chunks) {
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows(D, sizeof(T), 16, 512);
  const int64_t tiles = (P + R - 1) / R;
  const bool need_h = mask[0] || mask[1] || mask[2];
  const T* zp = z.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const T* Gp = G.data_ptr<T>();
  at::parallel_for(0, chunks, 1, [&](int64_t cbegin, int64_t cend) {
    at::Tensor phi = at::empty({R, K}, z.options());
    at::Tensor gphi = at::empty({R, K}, z.options());
    at::Tensor hg = at::empty({K}, z.options());
    T* phip = phi.data_ptr<T>();
    T* hp = gphi.data_ptr<T>();
    for (int64_t c = cbegin; c < cend; ++c) {
      T* gc = mask[1] ? gcT_acc[c].data_ptr<T>() : nullptr;
      T* gg = mask[2] ? gg_acc[c].data_ptr<T>() : nullptr;
      at::Tensor gW = mask[3] ? gW_acc[c] : at::Tensor();
      T* gzeta = mask[4] ? gzeta_acc[c].data_ptr<T>() : nullptr;
      for (int64_t t = chunk_begin(tiles, chunks, c); t < chunk_begin(tiles, chunks, c + 1); ++t) {
        const int64_t r0 = t * R, rows = std::min(R, P - r0);
        const at::Tensor Gt = G.narrow(0, r0, rows);
        const at::Tensor phit = phi.narrow(0, 0, rows);
        rbf_features<T>(zp + r0 * d, rows, d, cp, gp, K, phip);
        if (need_h) {
          at::Tensor gphit = gphi.narrow(0, 0, rows);
          at::mm_out(gphit, Gt, weights);  // (rows, D) @ (D, K)
          for (int64_t i = 0; i < rows * K; ++i) hp[i] *= phip[i];
          rbf_features_backward<T>(zp + r0 * d, rows, d, cp, gp, K, hp, hg.data_ptr<T>(),
                                   mask[0] ? gz.data_ptr<T>() + r0 * d : nullptr, gc, gg);
        }
        if (mask[3]) gW.addmm_(Gt.t(), phit);  // (D, rows) @ (rows, K)
        if (mask[4]) {
          for (int64_t r = 0; r < rows; ++r) {
            const T* Gr = Gp + (r0 + r) * D;
#pragma omp simd
            for (int64_t j = 0; j < D; ++j) gzeta[j] += Gr[j];
          }
        }
      }
    }
  });
}

at::Tensor rbf_precision_cpu(const at::Tensor& z_in, const at::Tensor& centers_in,
                             const at::Tensor& gammas_in, const at::Tensor& weights_in,
                             const at::Tensor& zeta_in) {
  TORCH_CHECK(z_in.dim() == 2, "z must be (P, d), got ", z_in.sizes());
  check_rbf_params(z_in, "z", centers_in, gammas_in, weights_in);
  check_zeta(zeta_in, weights_in);
  const at::Tensor z = plain(z_in), gammas = plain(gammas_in);
  const at::Tensor weights = plain(weights_in), zeta = plain(zeta_in);
  const at::Tensor cT = centers_t(centers_in);
  at::Tensor out = new_output({z.size(0), weights.size(0)}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo::rbf_precision", [&] {
    rbf_precision_kernel<scalar_t>(z, cT, gammas, weights, zeta, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rbf_precision_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& z_in, const at::Tensor& centers_in,
    const at::Tensor& gammas_in, const at::Tensor& weights_in, std::array<bool, 5> mask) {
  TORCH_CHECK(z_in.dim() == 2, "z must be (P, d), got ", z_in.sizes());
  check_rbf_params(z_in, "z", centers_in, gammas_in, weights_in);
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == z_in.size(0) &&
                  grad_in.size(1) == weights_in.size(0),
              "grad must be (P, D), got ", grad_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == z_in.scalar_type(), "grad dtype ", grad_in.scalar_type(),
              " differs from z dtype ", z_in.scalar_type());
  const at::Tensor G = plain(grad_in), z = plain(z_in), gammas = plain(gammas_in);
  const at::Tensor weights = plain(weights_in);
  const at::Tensor cT = centers_t(centers_in);
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows(D, z.element_size(), 16, 512);
  const int64_t chunks = num_chunks((P + R - 1) / R);
  const auto opts = z.options();
  auto none = [&] { return at::empty({0}, opts); };  // a fresh one per output: outputs must not alias
  at::Tensor gz = mask[0] ? new_output({P, d}, opts) : none();
  at::Tensor gcT = mask[1] ? at::zeros({chunks, d, K}, opts) : none();
  at::Tensor gg = mask[2] ? at::zeros({chunks, K}, opts) : none();
  at::Tensor gW = mask[3] ? at::zeros({chunks, D, K}, opts) : none();
  at::Tensor gzeta = mask[4] ? at::zeros({chunks, D}, opts) : none();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo::rbf_precision_backward", [&] {
    rbf_precision_backward_kernel<scalar_t>(G, z, cT, gammas, weights, mask, gz, gcT, gg, gW, gzeta,
                                            chunks);
  });
  return {gz, mask[1] ? gcT.sum(0).t().contiguous() : none(), mask[2] ? gg.sum(0) : none(),
          mask[3] ? gW.sum(0) : none(), mask[4] ? gzeta.sum(0) : none()};
}

}  // namespace

}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("rbf_precision", &fastgeo::cpu::rbf_precision_cpu);
  m.impl("rbf_precision_backward", &fastgeo::cpu::rbf_precision_backward_cpu);
}
