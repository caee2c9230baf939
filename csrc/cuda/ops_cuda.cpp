// The CUDA C++ implementations of the torch.ops.fastgeo operators (schemas in csrc/ops.cpp), as
// the module fastgeo._C_cuda: the operators' CUDA kernels call them when the registry picks
// "cuda" (fastgeo/ops/library.py routes each CUDA call to these or to the Triton kernels). Thin
// glue: checks, contiguity, output allocation, dtype dispatch and the current stream; the kernels
// themselves are torch-free (kernels.h). Built only when torch has CUDA (setup.py, FASTGEO_CUDA=1).
// Gradients for centers / gammas are not computed by these kernels: asking raises.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <array>
#include <tuple>

#include "kernels.h"

namespace {

using at::Tensor;
using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "fastgeo CUDA kernel ", op, " failed: ", cudaGetErrorString(err));
}

void check_no_param_grads(const std::array<bool, 5>& mask, const char* op) {
  TORCH_CHECK(!mask[1] && !mask[2], "fastgeo CUDA ", op,
              ": gradients for centers/gammas are not implemented on CUDA; use "
              "fastgeo.use_backend('reference') to differentiate them");
}

Tensor empty0(const Tensor& like) { return at::empty({0}, like.options()); }

Tensor rbf_precision_cuda(const Tensor& z, const Tensor& centers, const Tensor& gammas, const Tensor& weights,
                          const Tensor& zeta) {
  c10::cuda::CUDAGuard guard(z.device());
  const auto zc = z.contiguous(), cc = centers.contiguous(), gc = gammas.contiguous(), zt = zeta.contiguous();
  const auto wt = weights.t().contiguous();  // (K, D): coalesced reads along D
  const int64_t P = z.size(0), d = z.size(1), K = centers.size(0), D = weights.size(0);
  auto out = at::empty({P, D}, z.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo_rbf_precision_cuda", [&] {
    check_launch(fastgeo_cuda::rbf_precision_forward<scalar_t>(
                     zc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                     wt.data_ptr<scalar_t>(), zt.data_ptr<scalar_t>(), P, d, K, D, out.data_ptr<scalar_t>(), stream),
                 "rbf_precision");
  });
  return out;
}

Grads rbf_precision_backward_cuda(const Tensor& grad, const Tensor& z, const Tensor& centers, const Tensor& gammas,
                                  const Tensor& weights, std::array<bool, 5> mask) {
  check_no_param_grads(mask, "rbf_precision_backward");
  c10::cuda::CUDAGuard guard(z.device());
  const auto gr = grad.contiguous(), zc = z.contiguous(), cc = centers.contiguous(), gc = gammas.contiguous();
  const auto wc = weights.contiguous();
  const int64_t P = z.size(0), d = z.size(1), K = centers.size(0), D = weights.size(0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  Tensor gz = mask[0] ? at::empty({P, d}, z.options()) : empty0(z);
  Tensor gw = empty0(z), gzeta = empty0(z);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fastgeo_rbf_precision_backward_cuda", [&] {
    if (mask[0])
      check_launch(fastgeo_cuda::rbf_precision_backward_z<scalar_t>(
                       gr.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                       gc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), P, d, K, D, gz.data_ptr<scalar_t>(), stream),
                   "rbf_precision_backward");
    if (mask[3]) {
      // grad_weights = grad^T @ phi: phi (P, K) is small next to grad (P, D).
      auto phi = at::empty({P, K}, z.options());
      check_launch(fastgeo_cuda::rbf_features<scalar_t>(zc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                                                        gc.data_ptr<scalar_t>(), P, d, K, phi.data_ptr<scalar_t>(),
                                                        stream),
                   "rbf_features");
      gw = at::matmul(gr.t(), phi);
    }
  });
  if (mask[4]) gzeta = gr.sum(0);
  return {gz, empty0(z), empty0(z), gw, gzeta};
}

Tensor segment_sqdist_cuda(const Tensor& x) {
  c10::cuda::CUDAGuard guard(x.device());
  const auto xc = x.contiguous();
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  auto out = at::zeros({B, N - 1}, x.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastgeo_segment_sqdist_cuda", [&] {
    check_launch(fastgeo_cuda::segment_sqdist_forward<scalar_t>(xc.data_ptr<scalar_t>(), B, N, D,
                                                                out.data_ptr<scalar_t>(), stream),
                 "segment_sqdist");
  });
  return out;
}

Tensor segment_sqdist_backward_cuda(const Tensor& grad, const Tensor& x) {
  c10::cuda::CUDAGuard guard(x.device());
  const auto gr = grad.contiguous(), xc = x.contiguous();
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  auto gx = at::empty({B, N, D}, x.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastgeo_segment_sqdist_backward_cuda", [&] {
    check_launch(fastgeo_cuda::segment_sqdist_backward<scalar_t>(gr.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(),
                                                                 B, N, D, gx.data_ptr<scalar_t>(), stream),
                 "segment_sqdist_backward");
  });
  return gx;
}

Tensor rbf_segment_sqdist_cuda(const Tensor& points, const Tensor& centers, const Tensor& gammas,
                               const Tensor& weights, const Tensor& zeta) {
  c10::cuda::CUDAGuard guard(points.device());
  const auto pc = points.contiguous(), cc = centers.contiguous(), gc = gammas.contiguous();
  const auto zt = zeta.contiguous(), wt = weights.t().contiguous();
  const int64_t B = points.size(0), N = points.size(1), d = points.size(2), K = centers.size(0),
                D = weights.size(0);
  auto out = at::empty({B, N - 1}, points.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "fastgeo_rbf_segment_sqdist_cuda", [&] {
    check_launch(fastgeo_cuda::rbf_segment_sqdist_forward<scalar_t>(
                     pc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                     wt.data_ptr<scalar_t>(), zt.data_ptr<scalar_t>(), B, N, d, K, D, out.data_ptr<scalar_t>(),
                     stream),
                 "rbf_segment_sqdist");
  });
  return out;
}

Grads rbf_segment_sqdist_backward_cuda(const Tensor& grad, const Tensor& points, const Tensor& centers,
                                       const Tensor& gammas, const Tensor& weights, const Tensor& zeta,
                                       std::array<bool, 5> mask) {
  check_no_param_grads(mask, "rbf_segment_sqdist_backward");
  c10::cuda::CUDAGuard guard(points.device());
  const auto gr = grad.contiguous(), pc = points.contiguous(), cc = centers.contiguous();
  const auto gc = gammas.contiguous(), wc = weights.contiguous(), zt = zeta.contiguous();
  const auto wt = weights.t().contiguous();
  const int64_t B = points.size(0), N = points.size(1), d = points.size(2), K = centers.size(0),
                D = weights.size(0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  // The kernel always forms grad_points (it is where grad_phi is consumed); atomics need zeros.
  auto gp = at::empty({B, N, d}, points.options());
  Tensor gw = mask[3] ? at::zeros({D, K}, points.options()) : empty0(points);
  Tensor gzeta = mask[4] ? at::zeros({D}, points.options()) : empty0(points);
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "fastgeo_rbf_segment_sqdist_backward_cuda", [&] {
    check_launch(fastgeo_cuda::rbf_segment_sqdist_backward<scalar_t>(
                     gr.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                     gc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(),
                     zt.data_ptr<scalar_t>(), B, N, d, K, D, gp.data_ptr<scalar_t>(),
                     mask[3] ? gw.data_ptr<scalar_t>() : nullptr, mask[4] ? gzeta.data_ptr<scalar_t>() : nullptr,
                     stream),
                 "rbf_segment_sqdist_backward");
  });
  return {mask[0] ? gp : empty0(points), empty0(points), empty0(points), gw, gzeta};
}

}  // namespace

// Same names and arguments as the operators' schemas (backward ops take output_mask as a list of
// five bools).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastgeo CUDA C++ kernels (called by the CUDA kernels of torch.ops.fastgeo)";
  m.def("rbf_precision", &rbf_precision_cuda);
  m.def("rbf_precision_backward", &rbf_precision_backward_cuda);
  m.def("segment_sqdist", &segment_sqdist_cuda);
  m.def("segment_sqdist_backward", &segment_sqdist_backward_cuda);
  m.def("rbf_segment_sqdist", &rbf_segment_sqdist_cuda);
  m.def("rbf_segment_sqdist_backward", &rbf_segment_sqdist_backward_cuda);
}
