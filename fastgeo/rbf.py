"""The RBF precision network of the decoder's variance (paper eq. (6), DESIGN §1)."""

from __future__ import annotations

import difflib
import inspect

import torch
from torch import Tensor, nn

from . import _checks, ops
from .ops import solver_ops
from .rbf_fit import fit_rbf_parameters


class RBFPrecision(nn.Module):
    """Precision ``beta(z) = W phi(z) + zeta`` with ``phi_k(z) = exp(-gamma_k ||z - c_k||^2)``.

    The decoder's standard deviation is ``sigma(z) = beta(z) ** -1/2``: small (``~ 1/sqrt(W phi)``)
    near the centers, where the data lies, and ``1/sqrt(zeta)`` far from them.

    Args:
        centers: (K, d) RBF centers.
        gammas: (K,) bandwidths, > 0 (units of 1 / latent distance^2).
        weights: (D, K) non-negative weights.
        zeta: scalar or (D,) precision floor, > 0.

    Parameters are validated once here (finite, shapes agree, gammas > 0, weights >= 0,
    zeta > 0). ``weights`` is an ``nn.Parameter`` (trainable); the others are buffers.

    Example::

        prec = fastgeo.RBFPrecision(centers, gammas, weights, zeta=1e-3)
        sigma = prec.sigma(z)          # (..., d) -> (..., D)
    """

    centers: Tensor
    gammas: Tensor
    zeta: Tensor

    def __init__(self, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor | float) -> None:
        super().__init__()
        centers, gammas, weights, zeta = _checks.rbf_params(centers, gammas, weights, zeta)
        if 0 in centers.shape:
            raise ValueError(f"centers must be (K, d), K >= 1 and d >= 1, got shape {tuple(centers.shape)}")
        if weights.shape[0] == 0:
            raise ValueError(f"weights must be (D, K) with D >= 1 outputs, got shape {tuple(weights.shape)}")
        with torch.inference_mode(False):  # made under inference_mode: still ordinary tensors
            self.register_buffer("centers", centers.detach().clone())
            self.register_buffer("gammas", gammas.detach().clone())
            self.register_buffer("zeta", zeta.detach().clone().contiguous())
            self.weights = nn.Parameter(weights.detach().clone())
        self.check_values()

    def check_values(self, prefix: str = "") -> None:
        """Raise unless the parameters are finite, gammas and zeta > 0 and weights >= 0: when
        made, and before each solve (``load_state_dict``, an optimizer step without
        :meth:`clamp_weights_`, an in-place edit may have broken them since; negative gammas gave
        finite lengths flagged converged)."""
        for name, t in zip(("centers", "gammas", "weights", "zeta"), self.params(), strict=True):
            _checks.finite(prefix + name, t.detach())
        for name, ok, why in (
            ("gammas", self.gammas > 0, "> 0"),
            ("weights", self.weights >= 0, ">= 0 (a precision is non-negative; see clamp_weights_())"),
            ("zeta", self.zeta > 0, "> 0 (it keeps sigma finite far from the data)"),
        ):
            if not bool(ok.all()):
                raise ValueError(f"{prefix}{name} must be {why}")

    @property
    def latent_dim(self) -> int:
        """d, the latent dimension."""
        return self.centers.shape[1]

    @property
    def data_dim(self) -> int:
        """D, the data dimension."""
        return self.weights.shape[0]

    @property
    def num_centers(self) -> int:
        """K, the number of RBF centers."""
        return self.centers.shape[0]

    def fingerprint(self) -> Tensor:
        """A few float64 numbers that change whenever any parameter does (sums, sums of squares
        and index-weighted sums of each): caches of what was built from this precision compare
        them, where decoded probe points, far from some centers, would not see those centers."""
        stats = []
        for p in self.params():
            flat = p.detach().double().flatten()
            place = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
            stats += [flat.sum(), flat.square().sum(), (flat * place).sum()]
        return torch.stack(stats).cpu()

    def check_replacement(self, new: object) -> None:
        """Raise unless ``new`` can replace this precision behind one decoder: an RBFPrecision of
        the same d, D, dtype and device (the decoder's output was checked against them)."""
        if not isinstance(new, RBFPrecision):
            raise TypeError(f"precision must be a fastgeo.RBFPrecision, got {type(new).__name__}")
        was = (self.latent_dim, self.data_dim, self.weights.dtype, self.weights.device)
        now = (new.latent_dim, new.data_dim, new.weights.dtype, new.weights.device)
        if now != was:
            raise ValueError(
                f"metric.precision must keep the metric's (d, D, dtype, device) = {was}, got {now}: for "
                "another decoder make a new ExpectedMetric"
            )

    def params(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(centers, gammas, weights, zeta): the arguments of ``fastgeo.ops`` RBF ops."""
        return self.centers, self.gammas, self.weights, self.zeta

    def forward(self, z: Tensor) -> Tensor:
        """Precision beta: (..., d) -> (..., D)."""
        return ops.rbf_precision(z, *self.params())

    def sigma(self, z: Tensor) -> Tensor:
        """Standard deviation ``beta ** -1/2``: (..., d) -> (..., D)."""
        return self(z).rsqrt()

    def sigma_and_jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """sigma and its Jacobian in closed form: z (P, d) -> (P, D), (P, D, d).

        ``d sigma / d z_i = -1/2 beta^-3/2 W (phi * -2 gamma (z_i - c_i))``: d + 1 products with W,
        far cheaper than forward-mode AD through the network.
        """
        sigma, jac_t = self.sigma_and_jacobian_t(z)
        return sigma, jac_t.transpose(-1, -2)

    def sigma_and_jacobian_t(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`sigma_and_jacobian` with the Jacobian transposed, contiguous: (P, D), (P, d, D).

        The operator ``torch.ops.fastgeo.rbf_sigma_jacobian`` (a fused C++ kernel on CPU tensors);
        where gradients are needed, its differentiable reference.
        """
        _checks.tensor("z", z, ndim=2)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (P, d) with d = {self.latent_dim}, got shape {tuple(z.shape)}")
        _checks.same_dtype_device([("z", z), ("centers", self.centers)])
        return solver_ops.rbf_sigma_jacobian(z, *self.params())

    def segment_sqdist(self, points: Tensor) -> Tensor:
        """``||sigma(z_{n+1}) - sigma(z_n)||^2``, fused: (B, N, d) -> (B, N-1)."""
        return ops.rbf_segment_sqdist(points, *self.params())

    def total_precision(self, z: Tensor) -> Tensor:
        """``g(z) = sum_D beta(z)``, whose ridges geodesics follow: (..., d) -> (...)."""
        return self(z).sum(-1)

    def extra_repr(self) -> str:
        return f"K={self.num_centers}, d={self.latent_dim}, D={self.data_dim}"

    @classmethod
    def fit(cls, latents: Tensor, data: Tensor, mean, **options) -> RBFPrecision:
        """Fit centers, bandwidths and weights to training data (Arvanitidis et al., 2018).

        latents (M, d), data (M, D) or images (M, C, H, W), mean (..., d) -> (..., D). Options
        (keywords, defaults in brackets): ``num_centers`` (min(64, M)), ``bandwidth_scale``
        (1.5), ``zeta`` (0.001), ``steps`` (1000), ``lr`` (0.05), ``progress`` (a bar once it runs 10 s),
        ``seed`` (0); see
        :func:`fastgeo.rbf_fit.fit_rbf_parameters` for what each does and the recipe. Example::

            prec = fastgeo.RBFPrecision.fit(encoder_means, X, decoder_mean, zeta=1e-3)
        """
        known = [
            k
            for k in inspect.signature(fit_rbf_parameters).parameters
            if k not in ("latents", "data", "mean")
        ]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(
                    f"RBFPrecision.fit got an unknown option {name!r}{hint}; its options are {known}"
                )
        params = fit_rbf_parameters(latents, data, mean, **options)
        # Made under torch.inference_mode, the weights would be inference tensors, which no later
        # training (the weights are a Parameter) could use.
        with torch.inference_mode(False):
            return cls(*params)

    @torch.no_grad()
    def clamp_weights_(self) -> RBFPrecision:
        """Project ``weights`` back onto >= 0 (after an unconstrained optimizer step)."""
        self.weights.clamp_(min=0)
        return self
