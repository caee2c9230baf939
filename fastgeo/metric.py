"""The expected Riemannian metric of a stochastic decoder ``x = mu(z) + sigma(z) * eps``."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from . import _checks, _mean_checks, _metric_checks, ops
from ._mean_reach import batch_statistics_kept, layers_in_eval, loose_tensors_of, modules_of, parameter_kinds
from .decoders import StackedChain, jacobian_rows, piecewise_linear, smoothed, stacked_chain
from .decoders.compact import compact_chain
from .decoders.flat import FlatOutput, flat_output
from .decoders.generic import differentiable_jacobian_rows
from .decoders.recognize import describe, recognize
from .decoders.rows import decode_in_rows
from .decoders.steps import convolves
from .decoders.uses import new_use
from .discrete import energy_from_segments, length_from_segments
from .rbf import RBFPrecision


class ExpectedMetric:
    """``M(z) = J_mu^T J_mu + J_sigma^T J_sigma`` with ``sigma`` from an :class:`RBFPrecision`.

    Curves are discretized at ``N`` points ``c_n`` (DESIGN §1):

        s_n = ||mu(c_{n+1}) - mu(c_n)||^2 + ||sigma(c_{n+1}) - sigma(c_n)||^2
        energy = (N-1)/2 sum_n s_n        length = sum_n sqrt(s_n)

    Args:
        mean: the decoder mean, any differentiable callable (P, d) -> (P, D), e.g. an
            ``nn.Module`` (convolutional decoders included); it is always called on a batch of
            codes (:meth:`decode` takes any (..., d)). A mean returning images (P, C, H, W) of
            D values each is flattened (``self.mean`` is then the flattened one); a mean
            compiled by ``torch.compile`` is used uncompiled (fastgeo differentiates it by its
            own kernels). Its parameters are not optimized here.
        precision: the RBF precision network of the decoder's variance (D outputs).

    Example::

        metric = fastgeo.ExpectedMetric(decoder_mean, fastgeo.RBFPrecision(c, g, W, zeta))
        L = metric.length(points)       # (B, N, d) -> (B,)
    """

    def __init__(self, mean: Callable[[Tensor], Tensor], precision: RBFPrecision) -> None:
        if not callable(mean):
            raise TypeError(f"mean must be a callable (..., d) -> (..., D), got {type(mean).__name__}")
        if not isinstance(precision, RBFPrecision):
            raise TypeError(f"precision must be a fastgeo.RBFPrecision, got {type(precision).__name__}")
        _checks.outside_autocast("ExpectedMetric")
        new_use()  # a new metric of a decoder used before: its chain is checked again
        mean = _mean_checks.uncompiled(mean)
        _mean_checks.eval_mode("mean", mean)
        self._eval_layers = layers_in_eval(mean)  # checked again at every call
        self.precision = precision
        # A batch norm in training mode behind a method or a function is refused below (the mean
        # depends on its batch), after calls that moved its running statistics: put back.
        with batch_statistics_kept(mean), _mean_checks.TRACING:  # (not while another thread traces)
            self.mean = flat_output(mean, precision.centers[:1], precision.data_dim)
            three = _mean_checks.check_codes(precision.centers)
            probes = _mean_checks.probe_outputs("mean", self.mean, three, precision.weights)
            _mean_checks.deterministic("mean", self.mean, three, probes[1], probes[0])
            # a mean whose reverse-mode gradient is NaN where its values are finite: forward mode only
            self._nan_gradient = _mean_checks.differentiable("mean", self.mean, three)
        self._parameter_kinds = parameter_kinds(self.mean)  # checked again: a .double() since is refused

    def __repr__(self) -> str:
        return (
            f"ExpectedMetric(latent_dim={self.latent_dim}, data_dim={self.data_dim}, dtype={self.dtype}, "
            f"device={self.device}, rbf_centers={self.precision.centers.shape[0]}; describe() says how the "
            "mean is differentiated)"
        )

    def describe(self) -> str:
        """How fastgeo sees this metric, for a person: sizes, dtype, device, and how the mean is
        differentiated (a recognized chain of layers takes the stacked forward mode; anything
        else ``torch.func``, several times slower). ``print(metric.describe())``."""
        new_use()
        p = self.precision
        text = (
            f"ExpectedMetric: latent d = {self.latent_dim}, data D = {self.data_dim}, {self.dtype} on "
            f"{self.device}, {p.centers.shape[0]} RBF centers\n"
            f"mean: {describe(self.mean, self.latent_dim, agrees=self._chain() is not None)}"
        )
        compact = self._compact_mean()
        if compact is not None:
            width = compact(p.centers[:1].detach()).shape[-1]
            text += (
                f"\ndistances: the mean's last layer is linear and widens to D = {self.data_dim}: the "
                f"solver measures curves by its {width} x {width} triangular factor instead (the same "
                "lengths, fewer values)"
            )
        return text

    @property
    def piecewise_linear_mean(self) -> bool:
        """Whether the mean is a recognized chain with piecewise-linear activations (ReLU,
        LeakyReLU, PReLU, Hardtanh, ReLU6, Hardsigmoid, Hardswish); the solver then keeps its
        secant model (see :func:`fastgeo.solver.options.solver_options`)."""
        new_use()
        return self._chain() is not None and piecewise_linear(self.mean, self.latent_dim)  # checked first

    @property
    def convolutional_mean(self) -> bool:
        """Whether the mean is a recognized chain with convolutions (transposed too): on the CPU
        their float64 kernels are several times slower than float32's."""
        new_use()
        chain = self._chain()
        return chain is not None and convolves(chain.steps)

    @_metric_checks.called_by_user
    def smoothed(self, sharpness: float | None = None) -> ExpectedMetric | None:
        """This metric with the kinks of the mean's piecewise-linear activations rounded
        (:mod:`fastgeo.decoders.smoothing`; ``sharpness``: its default if None; the same
        precision), or None if the mean is not a recognized chain with such activations. Kept
        per structure of the mean and sharpness; it reads the mean's parameters at every call."""
        if sharpness is not None:
            sharpness = _checks.positive_float("sharpness", sharpness)
        if self._chain() is None:  # checked first: a chain read that is not the mean's has none
            return None
        found = recognize(self.mean, self.latent_dim)
        if found is None:
            return None
        kept = self.__dict__.setdefault("_smoothed", {})
        key = (found[1], sharpness)
        if key not in kept:
            mean = smoothed(self.mean, self.precision.centers, sharpness)
            for old in [k for k in kept if k[0] != found[1]]:  # of a structure the mean had
                del kept[old]
            kept[key] = None if mean is None else ExpectedMetric(mean, self.precision)
            if kept[key] is not None:  # its solves take this metric's latent graph
                kept[key]._smoothed_from = weakref.ref(self)  # (no cycle: the metric keeps it)
        return kept[key]

    @property
    def precision(self) -> RBFPrecision:
        """The :class:`RBFPrecision` of the decoder's variance (may be replaced by one of the same
        d, D, dtype and device)."""
        return self.__dict__["precision"]

    @precision.setter
    def precision(self, new: RBFPrecision) -> None:
        old = self.__dict__.get("precision")
        if old is not None:  # (the first one the constructor checked against the mean)
            old.check_replacement(new)
        self.__dict__["precision"] = new
        self.__dict__.pop("_smoothed", None)  # they hold the precision they were made with

    def __getstate__(self) -> dict:
        # The smoothed means are rebuilt on use (their getters are local functions: unpicklable),
        # the latent graphs (solver.graph_cache's caches) too.
        return {k: v for k, v in self.__dict__.items() if k not in ("_smoothed", "_graph_caches")}

    @property
    def latent_dim(self) -> int:
        """d, the latent dimension."""
        return self.precision.latent_dim

    @property
    def data_dim(self) -> int:
        """D, the decoder's output values per point (images flattened)."""
        return self.precision.data_dim

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the precision's parameters, which codes passed in must have."""
        return self.precision.weights.dtype

    @property
    def device(self) -> torch.device:
        """The device of the precision's parameters, where codes passed in must be."""
        return self.precision.weights.device

    def to(
        self,
        *args: torch.dtype | torch.device | str | int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> ExpectedMetric:
        """A copy of this metric in another dtype and/or on another device (e.g. float64 for
        ``method="dense"``), called as ``nn.Module.to`` is: ``to(torch.float64)``,
        ``to("cuda")``, ``to("cuda", torch.float64)``, ``to(device="cuda", dtype=torch.float64)``.
        The mean must be an ``nn.Module`` or a method of one (the module is copied and converted)."""
        import copy
        import types

        if len(args) > 2:
            raise TypeError(f"ExpectedMetric.to takes a device and/or a dtype, got {len(args)} arguments")
        for arg in args:
            name = "dtype" if isinstance(arg, torch.dtype) else "device"
            if (dtype if name == "dtype" else device) is not None:
                raise TypeError(f"ExpectedMetric.to got {name} twice ({arg!r} and the one before)")
            if name == "dtype":
                dtype = arg  # type: ignore[assignment]
            else:
                device = arg  # type: ignore[assignment]
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if device is not None:
            device = _checks.device("device", device)
        given = self.mean.mean if isinstance(self.mean, FlatOutput) else self.mean  # images: made flat again
        owner = getattr(given, "__self__", None)
        if isinstance(given, torch.nn.Module):
            mean = copy.deepcopy(given).to(dtype=dtype, device=device)
        elif isinstance(owner, torch.nn.Module) and isinstance(given, types.MethodType):
            mean = types.MethodType(given.__func__, copy.deepcopy(owner).to(dtype=dtype, device=device))
        else:
            raise TypeError(
                "ExpectedMetric.to needs the mean to be an nn.Module or a method of one, got a plain "
                "callable: convert your decoder and make a new metric"
            )
        precision = copy.deepcopy(self.precision).to(dtype=dtype, device=device)
        return ExpectedMetric(mean, precision)

    def check_points(self, name: str, points: Tensor, ndim: int | None = None) -> Tensor:
        """Validate latent points against this metric: float dtype, device, last axis d (and no
        ``torch.autocast`` around the call)."""
        _checks.outside_autocast("ExpectedMetric")
        _checks.tensor(name, points, ndim=ndim, min_ndim=1)
        if points.shape[-1] != self.latent_dim:
            raise ValueError(
                f"{name} must have latent dimension d = {self.latent_dim} on its last axis, "
                f"got shape {tuple(points.shape)}"
            )
        if points.dtype != self.dtype:
            raise TypeError(
                f"{name} has dtype {points.dtype} but the metric is {self.dtype}: convert the codes "
                f"({name}.to({self.dtype})) or the metric (metric.to({points.dtype}))"
            )
        if points.device != self.device:
            raise ValueError(f"{name} is on {points.device} but the metric is on {self.device}")
        return points

    @_metric_checks.called_by_user
    def segment_sqdist(self, points: Tensor) -> Tensor:
        """Expected squared length ``s_n`` of each segment: (B, N, d) -> (B, N-1)."""
        self.check_points("points", points, ndim=3)
        if points.shape[1] < 2:
            raise ValueError(f"points must have N >= 2 per curve, got shape {tuple(points.shape)}")
        return ops.segment_sqdist(self.mean_embedding(points)) + self.precision.segment_sqdist(points)

    @_metric_checks.called_by_user
    def energy(self, points: Tensor) -> Tensor:
        """Discrete energy ``(N-1)/2 sum_n s_n``: (B, N, d) -> (B,)."""
        return energy_from_segments(self.segment_sqdist(points))

    @_metric_checks.called_by_user
    def length(self, points: Tensor) -> Tensor:
        """Discrete length ``sum_n sqrt(s_n)``: (B, N, d) -> (B,)."""
        return length_from_segments(self.segment_sqdist(points))

    @_metric_checks.called_by_user
    def length_with_ends(self, points: Tensor, first: Tensor, last: Tensor) -> Tensor:
        """:meth:`length` of curves (B, N, d) whose end points' :meth:`mean_embedding` (B, F) each
        is known (computed under the same grad mode): only the N - 2 inner points are decoded, as
        one flat batch, so their rounding depends on the batch. For measurements made once that
        share end points, as the latent graph's edges: (B,)."""
        self.check_points("points", points, ndim=3)
        first, last = _checks.tensor("first", first, ndim=2), _checks.tensor("last", last, ndim=2)
        _checks.same_dtype_device([("points", points), ("first", first), ("last", last)])
        B, N, d = points.shape
        inner = self.mean_embedding(points[:, 1:-1].reshape(-1, d))
        if N < 2 or first.shape != (B, inner.shape[-1]) or last.shape != first.shape:
            raise ValueError(
                f"points (B, N >= 2, d) and first, last (B, F = {inner.shape[-1]}, the mean_embedding's "
                f"width) must agree, got {tuple(points.shape)}, {tuple(first.shape)} and {tuple(last.shape)}"
            )
        inner = inner.reshape(B, N - 2, first.shape[-1])
        embedded = torch.cat([first[:, None], inner, last[:, None]], 1)
        s = ops.segment_sqdist(embedded) + self.precision.segment_sqdist(points)
        return length_from_segments(s)

    def probe(self, n: int = 8) -> Tensor:
        """The embedding ``[mu, sigma]`` at ``n`` fixed latent points near the RBF centers
        (deterministic): (n, 2D). It changes whenever the decoder or the precision does, whatever
        holds their parameters, so it identifies the metric for caches and checkpoints."""
        n = _checks.integer("n", n, 1)
        centers = self.precision.centers.detach()
        g = torch.Generator(device="cpu").manual_seed(20181203)
        pick = torch.randint(centers.shape[0], (n,), generator=g, device="cpu")
        spread = centers.std(0, correction=0).clamp(min=1e-3) if centers.shape[0] > 1 else centers.new_ones(1)
        offset = torch.randn(n, self.latent_dim, generator=g, device="cpu", dtype=torch.float64).to(centers)
        with torch.no_grad():
            return self.features(centers[pick.to(centers.device)] + 0.5 * spread * offset)

    @_metric_checks.called_by_user
    def decode(self, z: Tensor) -> Tensor:
        """The decoder mean at any (..., d) points: (..., D). The mean is called on (P, d), so
        decoders that take only a batch of codes (e.g. convolutional ones) work too.

        Curves (..., N, d) are decoded with each curve's points padded to a multiple of 8 rows
        (its last point repeated; :func:`fastgeo.decoders.rows.decode_in_rows`): BLAS kernels
        round a row differently in a partial block of rows, and without the padding a curve's
        length would depend on its batch."""
        self.check_points("z", z)
        return self._decode_with(self.mean, z, self.data_dim)

    @_metric_checks.called_by_user
    def mean_embedding(self, z: Tensor) -> Tensor:
        """Values of the mean up to an isometry of differences, ``||e(a) - e(b)|| = ||mu(a) -
        mu(b)||``, as the solver measures curves: (..., d) -> (..., F). The mean itself (F = D),
        or where it ends with a widening linear layer its compact stand-in
        (:mod:`fastgeo.decoders.compact`: F = that layer's inputs, the same segment lengths to
        rounding at a fraction of the cost; the stand-in has no autograd (its factor is taken from
        detached weights): in grad mode, where a gradient of z or of the decoder's parameters may
        be wanted, the mean; the solver measures under ``torch.no_grad``)."""
        self.check_points("z", z)
        compact = None if torch.is_grad_enabled() else self._compact_mean()
        if compact is None:
            return self._decode_with(self.mean, z, self.data_dim)
        return self._decode_with(compact, z, None)

    @_metric_checks.called_by_user
    def mean_embedding_jacobian_rows(
        self, z: Tensor, tangent_dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """An embedding of the mean (as :meth:`mean_embedding` under ``torch.no_grad``: the compact
        stand-in where the mean has one, F < D, whatever the grad mode) and its Jacobian,
        directions first: z (P, d) -> (P, F), (d, P, F) (tangents pushed in ``tangent_dtype``
        where given: float32 tangents of a float64 metric)."""
        self.check_points("z", z, ndim=2)
        compact = self._compact_mean()
        if compact is None:
            return jacobian_rows(self.mean, z, tangent_dtype)
        with torch.no_grad():
            return compact.value_and_jacobian_rows(z.detach(), tangent_dtype)

    @_metric_checks.called_by_user
    def embedding(self, z: Tensor) -> Tensor:
        """``[e(z), sigma(z)]`` with e the :meth:`mean_embedding`: (..., d) -> (..., F + D), the
        same segment lengths as :meth:`features` to rounding."""
        return torch.cat([self.mean_embedding(z), self.precision.sigma(z)], dim=-1)

    def _chain(self) -> StackedChain | None:
        """The mean's recognized chain, from its structure now (it may have changed), where it
        computes what the mean does (checked on a probe, once per use of the library), or None."""
        return stacked_chain(self.mean, self.precision.centers[:4].detach())

    def _compact_mean(self) -> StackedChain | None:
        """The mean's compact stand-in, from its structure now (it may have changed), or None."""
        chain = self._chain()
        return None if chain is None else compact_chain(chain, self.mean, self.precision.centers[:4].detach())

    def _decode_with(self, mean: Callable[[Tensor], Tensor], z: Tensor, width: int | None) -> Tensor:
        """``mean`` (P, d) -> (P, F) at points (..., d) as :meth:`decode` says: (..., F)."""
        probe = self.precision.centers[:1].detach()
        return decode_in_rows(mean, self.mean, z, self.data_dim, width, probe)

    @_metric_checks.called_by_user
    def features(self, z: Tensor) -> Tensor:
        """The embedding ``[mu(z), sigma(z)]`` whose pull-back is M: (..., d) -> (..., 2D)."""
        return torch.cat([self.decode(z), self.precision.sigma(z)], dim=-1)

    @_metric_checks.called_by_user
    def features_and_jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``[mu, sigma](z)`` and its Jacobian: the mean's by forward-mode AD (one pass per latent
        direction), sigma's in closed form; values only, no autograd (:meth:`metric_tensor` has it).

        z: (P, d) -> features (P, 2D), jacobian (P, 2D, d).
        """
        features, jac_t = self.features_and_jacobian_t(z)
        return features, jac_t.transpose(-1, -2)

    @_metric_checks.called_by_user
    def features_and_jacobian_t(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`features_and_jacobian` with the Jacobian transposed, contiguous (the solver's
        layout: one row per latent direction): z (P, d) -> (P, 2D), (P, d, 2D)."""
        self.check_points("z", z, ndim=2)
        mu, j_mu = jacobian_rows(self.mean, z)  # (P, D), (d, P, D)
        _metric_checks.output_width(j_mu.shape[-1], self.data_dim)
        sigma, j_sigma = self.precision.sigma_and_jacobian_t(z.detach())
        return torch.cat([mu, sigma], -1).detach(), torch.cat([j_mu.transpose(0, 1), j_sigma], -1).detach()

    @_metric_checks.called_by_user
    def metric_tensor(self, z: Tensor) -> Tensor:
        """``M(z) = J^T J`` of the embedding ``[mu, sigma]``: (..., d) -> (..., d, d). In grad mode,
        where z or a parameter of the decoder or the precision requires grad, differentiable in
        them (the mean's Jacobian by ``torch.func.jvp``, d passes); otherwise values (faster)."""
        self.check_points("z", z)
        # (contiguous: torch.func's jvp writes into codes expanded from one row)
        lead, flat = z.shape[:-1], z.reshape(-1, self.latent_dim).contiguous()
        if torch.is_grad_enabled() and (  # (the walks of the mean's references: in grad mode only)
            z.requires_grad
            or any(p.requires_grad for m in (*modules_of(self.mean), self.precision) for p in m.parameters())
            or bool(loose_tensors_of(self.mean))
        ):
            j_mu = differentiable_jacobian_rows(self.mean, flat)[1]
            _metric_checks.output_width(j_mu.shape[-1], self.data_dim)
            jac_t = torch.cat([j_mu.transpose(0, 1), self.precision.sigma_and_jacobian_t(flat)[1]], -1)
        else:
            _, jac_t = self.features_and_jacobian_t(flat)
        G = jac_t @ jac_t.transpose(-1, -2)
        G = 0.5 * (G + G.transpose(-1, -2))  # exactly symmetric (a batched product need not be)
        return G.reshape(*lead, self.latent_dim, self.latent_dim)
