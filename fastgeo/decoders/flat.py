"""The adapter of a saved decoder mean: a module captured for (P, d) inputs, applied to any (..., d)."""

from __future__ import annotations

from torch import Tensor, nn


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
