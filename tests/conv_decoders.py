"""Convolutional decoders of MNIST-like (784) and 64x64x3 outputs, as users write them: an
``nn.Sequential`` and a custom ``nn.Module`` of each (seeded, float64, eval mode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tangent_checks import init_
from torch import nn


def mnist_sequential(d: int, c: int = 4) -> nn.Sequential:
    """(P, d) -> (P, 784): Linear - ELU - Unflatten - ConvT (7 -> 14) - BatchNorm - ELU - ConvT
    (14 -> 28) - Sigmoid - Flatten."""
    return init_(nn.Sequential(
        nn.Linear(d, 2 * c * 7 * 7), nn.ELU(), nn.Unflatten(1, (2 * c, 7, 7)),
        nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ELU(),
        nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid(), nn.Flatten(),
    ))  # fmt: skip


def rgb64_sequential(d: int, c: int = 2) -> nn.Sequential:
    """(P, d) -> (P, 3 * 64 * 64): 4x4 -> 8 (ConvT) -> 16 (bilinear Upsample) -> 32 (ConvT)
    -> 64 (ConvT) with GroupNorm, SiLU, LeakyReLU, ELU, Sigmoid."""
    return init_(nn.Sequential(
        nn.Linear(d, 4 * c * 16), nn.Unflatten(1, (4 * c, 4, 4)), nn.SiLU(),
        nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.GroupNorm(2, 2 * c), nn.SiLU(),
        nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2 * c, c, 3, padding=1), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(c, c, 4, 2, 1), nn.ELU(), nn.ConvTranspose2d(c, 3, 4, 2, 1), nn.Sigmoid(),
        nn.Flatten(),
    ))  # fmt: skip


class MnistDecoder(nn.Module):
    """A custom decoder class: ``fc``, ``.view(-1, C, 7, 7)``, a deconvolution stack, then
    ``torch.sigmoid`` and ``.flatten(1)``."""

    def __init__(self, d: int, c: int = 4) -> None:
        super().__init__()
        self.c = 2 * c
        self.fc = nn.Linear(d, 2 * c * 7 * 7)
        self.deconv = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ELU(),
                                    nn.ConvTranspose2d(c, 1, 4, 2, 1))  # fmt: skip

    def forward(self, z):
        h = F.elu(self.fc(z)).view(-1, self.c, 7, 7)
        return torch.sigmoid(self.deconv(h)).flatten(1)


class Rgb64Decoder(nn.Module):
    """A custom decoder with functional activations, ``x.size(0)`` / ``x.shape[0]`` reshapes,
    ``F.interpolate`` and ``torch.flatten``."""

    def __init__(self, d: int, c: int = 2) -> None:
        super().__init__()
        self.alpha = 0.7
        self.fc = nn.Linear(d, 4 * c * 16)
        self.up1 = nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1)
        self.norm = nn.GroupNorm(2, 2 * c)
        self.conv = nn.Conv2d(2 * c, c, 3, padding=1, bias=False)
        self.up2 = nn.ConvTranspose2d(c, c, 4, 2, 1)
        self.out = nn.ConvTranspose2d(c, 3, 4, 2, 1)

    def forward(self, z):
        h = F.silu(self.fc(z)).reshape(z.size(0), -1, 4, 4)
        h = torch.relu(self.norm(self.up1(h)))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.leaky_relu(self.conv(h), 0.2).view(h.shape[0], -1, 16, 16)
        h = F.elu(self.up2(h), alpha=self.alpha)
        return torch.flatten(torch.sigmoid(self.out(h)), 1)
