"""What every generator file holds besides the decoder mean: its shapes and dtype, the RBF
precision's tensors, a probe of the mean's outputs (checked on load) and the user's extra tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..metric import ExpectedMetric
from ..rbf import RBFPrecision

RBF_NAMES = ("centers", "gammas", "weights", "zeta")
PROBE_ROWS = 8


@dataclass
class Contents:
    """A generator as files store it: d, D, dtype, RBF tensors, probe (z, x), extra tensors."""

    latent_dim: int
    data_dim: int
    dtype: torch.dtype
    rbf: dict[str, Tensor]
    probe: dict[str, Tensor]
    extra: dict[str, Tensor]

    def precision(self) -> RBFPrecision:
        return RBFPrecision(*(self.rbf[k] for k in RBF_NAMES))

    def check_probe(self, mean: Callable[[Tensor], Tensor], path: str) -> None:
        """The loaded mean reproduces the outputs saved with it."""
        z, want = self.probe.get("z"), self.probe.get("x")
        if z is None or want is None or z.ndim != 2 or z.shape[0] == 0 or not torch.isfinite(want).all():
            raise ValueError(f"{path!r}: the file holds no probe outputs to check its mean against")
        with torch.no_grad():
            x = mean(z.to(self.dtype))
        if x.shape != want.shape or not torch.allclose(x, want.to(x.dtype), rtol=1e-5, atol=1e-6):
            raise ValueError(f"{path!r}: the saved mean does not reproduce its probe outputs")

    def check_precision(self, precision: RBFPrecision, path: str) -> None:
        """The loaded RBF precision reproduces the precisions saved with it (files written before
        they were saved hold none: nothing to compare)."""
        if "beta" not in self.probe:
            return
        with torch.no_grad():
            beta = precision(self.probe["z"].to(precision.centers)).cpu()
        want = self.probe["beta"]
        if beta.shape != want.shape or not torch.allclose(beta, want.to(beta.dtype), rtol=1e-5, atol=0):
            raise ValueError(f"{path!r}: the saved RBF precision does not reproduce its probe outputs")


def split_generator(generator: object) -> tuple[Callable[[Tensor], Tensor], RBFPrecision]:
    """(mean, precision) of an :class:`ExpectedMetric` or of a validated pair."""
    if isinstance(generator, ExpectedMetric):
        return generator.mean, generator.precision
    try:
        mean, precision = generator  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError("generator must be an ExpectedMetric or a pair (mean, precision)") from None
    # Validates shapes, dtype and device; a mean of images comes back flattened, as in a metric.
    return ExpectedMetric(mean, precision).mean, precision


def example_inputs(precision: RBFPrecision, example_input: Tensor | None) -> Tensor:
    """(P, d) latent codes, P >= 2, on the CPU: ``example_input`` flattened, or the RBF centers
    twice, jittered."""
    d = precision.latent_dim
    if example_input is None:
        c = precision.centers.detach().cpu()
        spread = c.std() if c.numel() > 1 else c.new_zeros(())  # one center at d = 1: no spread
        example = torch.cat([c, c + 0.1 * spread.clamp(min=1e-3) + 0.01])
    else:
        if not isinstance(example_input, Tensor):
            raise TypeError(f"example_input must be a torch.Tensor of codes (..., d = {d}), got "
                            f"{type(example_input).__name__}")  # fmt: skip
        if example_input.dim() == 0 or example_input.shape[-1] != d or example_input.numel() == 0:
            raise ValueError(
                f"example_input must hold at least one code of d = {d} (last axis), got shape "
                f"{tuple(example_input.shape)}"
            )
        example = example_input.detach().cpu().to(precision.weights.dtype).reshape(-1, d)
        if not bool(torch.isfinite(example).all()):
            raise ValueError("example_input contains NaN or inf")
    if example.shape[0] < 2:
        example = torch.cat([example, example + 0.01])
    return example


def contents_of(
    module: nn.Module, precision: RBFPrecision, example: Tensor, extra: dict[str, Tensor] | None
) -> Contents:
    """The contents of a file for a mean captured as ``module`` (P, d) -> (P, D) on the CPU."""
    D = precision.data_dim
    with torch.no_grad():
        expected = module(example)
    if tuple(expected.shape) != (example.shape[0], D):
        raise ValueError(
            f"mean maps (P, d) = {tuple(example.shape)} to {tuple(expected.shape)}, expected (P, {D})"
        )
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a dict of name -> tensor, got {type(extra).__name__}")
    extra = {} if extra is None else dict(extra)
    for k, v in extra.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise TypeError(f"extra must map names to tensors, got {k!r}: {type(v).__name__}")
        if not k or k.startswith(".") or k.endswith("."):
            raise ValueError(f"extra: names must be non-empty and not start or end with '.', got {k!r}")
        if v.device.type == "meta":
            raise TypeError(f"extra[{k!r}] is a meta tensor: it holds no values to save")
    rbf = {k: t.detach().cpu() for k, t in zip(RBF_NAMES, precision.params(), strict=True)}
    z = example[:PROBE_ROWS]
    with torch.no_grad():
        beta = precision(z.to(precision.centers)).cpu()
    probe = {"z": z, "x": expected[:PROBE_ROWS], "beta": beta}
    extra = {k: v.detach().cpu() for k, v in extra.items()}
    return Contents(precision.latent_dim, D, precision.weights.dtype, rbf, probe, extra)
