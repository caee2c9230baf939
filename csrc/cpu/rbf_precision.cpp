// rbf_precision on the CPU: beta = phi(z) W^T + zeta, a tile of rows of z at a time.
//
// Forward, per tile of R rows: phi (R, K) into a per-thread buffer, then one BLAS call writes
// zeta + phi W^T straight into the output rows (the tile is still in cache when the next
// tile starts), so the op is the (P x K) @ (K x D) GEMM plus a small exp pass.
// Backward, with G = dL/dbeta (P, D): phi is recomputed for all rows ((P, K), small next to G),
// then grad_phi = G W and grad_weights = G^T phi are two whole-matrix BLAS calls, grad_zeta =
// colsum(G), and grad_z / grad_centers / grad_gammas come from h = grad_phi * phi in one parallel
// pass; sums over rows go to per-chunk accumulators (one chunk per thread, reduced at the end),
// so the result does not depend on scheduling.
#include <array>
#include <vector>

#include <torch/library.h>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

template <typename T>
void rbf_precision_kernel(const at::Tensor& z, const at::Tensor& cT, const at::Tensor& gammas,
                          const at::Tensor& weights, const at::Tensor& zeta, at::Tensor& out) {
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows(std::max(D, K), sizeof(T), 16, 512);
  const int64_t tiles = (P + R - 1) / R;
  const T* zp = z.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const at::Tensor Wt = weights.t();  // (K, D) view; BLAS reads it transposed, no copy
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    at::Tensor phi = at::empty({std::min(R, P), K}, z.options());
    T* phip = phi.data_ptr<T>();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r0 = t * R, rows = std::min(R, P - r0);
      rbf_features<T>(zp + r0 * d, rows, d, cp, gp, K, phip);
      at::Tensor o = out.narrow(0, r0, rows);
      at::addmm_out(o, zeta, phi.narrow(0, 0, rows), Wt);
    }
  });
}

// phi for all rows (P, K): small next to the (P, D) gradient this backward already holds.
template <typename T>
void rbf_features_all(const at::Tensor& z, const at::Tensor& cT, const at::Tensor& gammas, at::Tensor& phi) {
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0);
  const T* zp = z.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  T* phip = phi.data_ptr<T>();
  at::parallel_for(0, P, 256, [&](int64_t begin, int64_t end) {
    rbf_features<T>(zp + begin * d, end - begin, d, cp, gp, K, phip + begin * K);
  });
}

// Given h = grad_phi * phi (P, K): grad_z rows, and per-chunk sums for centers and gammas.
template <typename T>
void rbf_precision_backward_kernel(const at::Tensor& z, const at::Tensor& cT, const at::Tensor& gammas,
                                   const at::Tensor& h, const std::array<bool, 5>& mask, at::Tensor& gz,
                                   at::Tensor& gcT_acc, at::Tensor& gg_acc, int64_t chunks) {
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0);
  const T* zp = z.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const T* hp = h.data_ptr<T>();
  at::parallel_for(0, chunks, 1, [&](int64_t cbegin, int64_t cend) {
    std::vector<T> hg(K);
    for (int64_t c = cbegin; c < cend; ++c) {
      const int64_t r0 = chunk_begin(P, chunks, c), rows = chunk_begin(P, chunks, c + 1) - r0;
      rbf_features_backward<T>(zp + r0 * d, rows, d, cp, gp, K, hp + r0 * K, hg.data(),
                               mask[0] ? gz.data_ptr<T>() + r0 * d : nullptr,
                               mask[1] ? gcT_acc[c].data_ptr<T>() : nullptr,
                               mask[2] ? gg_acc[c].data_ptr<T>() : nullptr);
    }
  });
}

at::Tensor rbf_precision_cpu(const at::Tensor& z_in, const at::Tensor& centers_in,
                             const at::Tensor& gammas_in, const at::Tensor& weights_in,
                             const at::Tensor& zeta_in) {
  TORCH_CHECK_VALUE(z_in.dim() == 2, "z must be (P, d), got ", z_in.sizes());
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
  TORCH_CHECK_VALUE(z_in.dim() == 2, "z must be (P, d), got ", z_in.sizes());
  check_rbf_params(z_in, "z", centers_in, gammas_in, weights_in);
  TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == z_in.size(0) &&
                        grad_in.size(1) == weights_in.size(0),
                    "grad must be (P, D), got ", grad_in.sizes());
  TORCH_CHECK_TYPE(grad_in.scalar_type() == z_in.scalar_type(), "grad dtype ", grad_in.scalar_type(),
                   " differs from z dtype ", z_in.scalar_type());
  const at::Tensor G = plain(grad_in), z = plain(z_in), gammas = plain(gammas_in);
  const at::Tensor weights = plain(weights_in);
  const at::Tensor cT = centers_t(centers_in);
  const int64_t P = z.size(0), d = z.size(1), K = gammas.size(0);
  const int64_t chunks = num_chunks(P);
  const auto opts = z.options();
  auto none = [&] { return at::empty({0}, opts); };  // a fresh one per output: outputs must not alias
  at::Tensor phi = at::empty({P, K}, opts);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo::rbf_features", [&] {
    rbf_features_all<scalar_t>(z, cT, gammas, phi);
  });
  // The two products are whole-matrix BLAS calls (multi-threaded inside): as large as they get.
  at::Tensor gz = mask[0] ? new_output({P, d}, opts) : none();
  at::Tensor gcT = mask[1] ? at::zeros({chunks, d, K}, opts) : none();
  at::Tensor gg = mask[2] ? at::zeros({chunks, K}, opts) : none();
  if (mask[0] || mask[1] || mask[2]) {
    at::Tensor h = at::mm(G, weights).mul_(phi);  // grad_phi * phi, (P, K)
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo::rbf_precision_backward", [&] {
      rbf_precision_backward_kernel<scalar_t>(z, cT, gammas, h, mask, gz, gcT, gg, chunks);
    });
  }
  return {gz, mask[1] ? gcT.sum(0).t().contiguous() : none(), mask[2] ? gg.sum(0) : none(),
          mask[3] ? at::mm(G.t(), phi) : none(), mask[4] ? G.sum(0) : none()};
}

}  // namespace

}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("rbf_precision", &fastgeo::cpu::rbf_precision_cpu);
  m.impl("rbf_precision_backward", &fastgeo::cpu::rbf_precision_backward_cpu);
}
