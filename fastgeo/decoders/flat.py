"""Adapters of decoder means: a saved mean captured for (P, d) inputs applied to any (..., d)
(:class:`FlatMean`), and a callable returning images as (P, D) rows (:class:`FlatOutput`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .. import _mean_checks


class FlatMean(nn.Module):
    """Applies a mean saved for (P, d) inputs to any (..., d): the loaded generator's mean."""

    def __init__(self, flat: nn.Module, latent_dim: int, data_dim: int) -> None:
        super().__init__()
        self.flat = flat
        self.latent_dim = latent_dim
        self.data_dim = data_dim

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        return self.flat(z.reshape(-1, self.latent_dim)).reshape(*lead, self.data_dim)


class FlatOutput:
    """A callable decoder mean that returns images (P, C, H, W) (any trailing shape), as
    (P, D) rows. ``nn.Module`` means get ``nn.Sequential(mean, nn.Flatten())`` instead; the
    structure of a method of a module (``vae.decode``) stays visible through this wrapper
    (:func:`fastgeo.decoders.recognize.chain_module`)."""

    def __init__(self, mean: Callable[[Tensor], Tensor]) -> None:
        self.mean = mean
        self.__wrapped__ = mean  # where its modules are found (training flags)

    def __call__(self, z: Tensor) -> Tensor:
        return self.mean(z).flatten(1)


def flat_output(mean: Callable[[Tensor], Tensor], code: Tensor, data_dim: int) -> Callable[[Tensor], Tensor]:
    """``mean`` itself when it returns (P, D); flattened when it returns (P, ...) of ``data_dim``
    values per point (a convolutional decoder's images), judged from its output at ``code`` (1, d)."""
    probe = _mean_checks.call("mean", mean, code)
    if not isinstance(probe, Tensor) or probe.dim() <= 2 or probe.shape[0] != 1:
        return mean  # (checked by the caller)
    if probe[0].numel() != data_dim:
        return mean
    if isinstance(mean, nn.Module):
        return nn.Sequential(mean, nn.Flatten(1))
    return FlatOutput(mean)
