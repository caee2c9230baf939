"""Image VAEs shaped like the ones in papers on latent geodesics: MLP and convolutional
decoders with latent dimension d = 2-128 and D = 784 (28x28) or 12,288 (64x64x3) outputs.

fastgeo is not a VAE library; these models exist to give its tests and benchmarks realistic
decoders (see ``tests/data/make_real_generators.py``). Like the two-moons VAE of
:mod:`fastgeo.demo.vae`:

- encoder ``q(z|x) = N(m(x), diag(s(x)^2))``, standard normal prior;
- Gaussian decoder ``N(mu(z), sigma^2 I)`` whose variance is learned during training only (here
  one variance shared by all pixels, the "calibrated decoder" of Rybkin et al., 2021), frozen
  at a small value (``init_var``, default 0.003) for the first half of training so that the mean
  is fitted in detail before the model can explain the rest of the data as noise. fastgeo later
  replaces the variance by an RBF precision network.

Every decoder mean is a plain ``nn.Sequential`` of standard layers, mapping (P, d) -> (P, D)
(the convolutional ones end with ``nn.Flatten``), so that it can be recognised layer by layer:
``nn.Linear``, ``nn.Unflatten``, ``nn.ConvTranspose2d``, ``nn.Conv2d``, optionally
``nn.BatchNorm2d`` or ``nn.GroupNorm``, pointwise activations (smooth ELU by default, since the
metric uses the decoder's Jacobian; ReLU and LeakyReLU give the piecewise-linear decoders many
users train) and a final ``nn.Sigmoid`` (pixels in [0, 1]). The images are flattened
channel-first, as :mod:`fastgeo.image_datasets` returns them.

Convolutional decoders take (P, d) inputs only (``nn.Unflatten`` and the convolutions fix the
batch axis); wrap them to apply them to (..., d), as ``fastgeo.load_generator`` does for a saved
mean.

Example::

    from fastgeo.image_datasets import shapes28
    from fastgeo.demo.vaes import conv_vae28
    from fastgeo.demo.vae_training import train_vae, evaluate_vae

    X, y = shapes28(10000, seed=0)
    vae = conv_vae28(latent_dim=8)
    log = train_vae(vae, X, epochs=20, seed=0)
    stats = evaluate_vae(vae, X)          # reconstruction error, KL per dimension, active units
    decoder_mean = vae.decoder_mean       # nn.Sequential (P, 8) -> (P, 784)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

_ACTIVATIONS = {
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
}
# Smallest decoder variance the training may learn: the procedural images are noise free, and an
# unbounded variance would shrink until the likelihood is dominated by a few pixels.
_MIN_LOG_VAR = math.log(1e-4)


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}") from None


def _norm(kind: str | None, channels: int) -> list[nn.Module]:
    if kind is None:
        return []
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "group":
        return [nn.GroupNorm(min(8, channels), channels)]
    if kind == "instance":
        return [nn.InstanceNorm2d(channels, affine=True)]
    raise ValueError(f"norm must be None, 'batch', 'group' or 'instance', got {kind!r}")


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _widths(name: str, values: Sequence[int], min_len: int = 1) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) < min_len:
        raise ValueError(f"{name} must have at least {min_len} entries, got {values!r}")
    for v in values:
        _positive_int(name, v)
    return values


class ImageVAE(nn.Module):
    """A VAE on flattened images: data (P, D) <-> latent (P, d).

    Attributes:
        encoder: (P, D) -> (P, 2d), the posterior mean and log-variance.
        decoder_mean: ``nn.Sequential`` (P, d) -> (P, D), the ``mu`` of the generator.
        log_var: () the decoder's shared log-variance, used during training only.
        image_shape: (C, H, W) of the data, ``D = C * H * W``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder_mean: nn.Sequential,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        *,
        init_var: float = 0.003,
    ) -> None:
        super().__init__()
        if not isinstance(decoder_mean, nn.Sequential):
            raise TypeError(f"decoder_mean must be an nn.Sequential, got {type(decoder_mean).__name__}")
        if not init_var > 0:
            raise ValueError(f"init_var must be > 0, got {init_var!r}")
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.image_shape = tuple(image_shape)
        self.data_dim = math.prod(self.image_shape)
        self.encoder = encoder
        self.decoder_mean = decoder_mean
        self.log_var = nn.Parameter(torch.tensor(math.log(init_var)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance: (P, D) -> (P, d) x 2."""
        h = self.encoder(x)
        return h[..., : self.latent_dim], h[..., self.latent_dim :]

    def elbo_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One-sample ELBO terms of a batch x (P, D): the Gaussian log-likelihood of each image
        (P,) and the KL divergence of each latent dimension (P, d)."""
        m, logv = self.encode(x)
        eps = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
        z = m + (0.5 * logv).exp() * eps
        mu = self.decoder_mean(z)
        log_var = self.log_var.clamp(min=_MIN_LOG_VAR)
        sq = (x - mu).pow(2).sum(-1)
        loglik = -0.5 * (sq / log_var.exp() + self.data_dim * (log_var + math.log(2 * math.pi)))
        kl = 0.5 * (m.pow(2) + logv.exp() - 1 - logv)
        return loglik, kl

    def elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean ELBO of a batch (one reparametrized sample): x (P, D) -> scalar, in nats."""
        loglik, kl = self.elbo_terms(x, generator)
        return loglik.mean() - kl.sum(-1).mean()

    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean at the posterior mean: (P, D) -> (P, D)."""
        return self.decoder_mean(self.encode(x)[0])


def mlp_vae(
    data_dim: int = 784,
    latent_dim: int = 16,
    hidden: Sequence[int] = (256, 256),
    *,
    activation: str = "elu",
    image_shape: tuple[int, int, int] | None = None,
    init_var: float = 0.003,
    output: str = "sigmoid",
) -> ImageVAE:
    """MLP VAE: decoder ``d -> hidden[-1] -> ... -> hidden[0] -> D`` (the encoder mirrors it).

    Decoder layers: ``Linear, act, ..., Linear, Sigmoid`` (a chain of affine layers and
    pointwise activations, which fastgeo's stacked forward mode recognises); with
    ``output="linear"`` no sigmoid (a Gaussian decoder of unbounded data, e.g. log-normalized
    expression).

    Args:
        data_dim: D (default 784).
        latent_dim: d.
        hidden: widths of the hidden layers, encoder order (the decoder reverses them).
        activation: "elu" (default), "softplus", "silu", "tanh", "gelu", "mish", "relu" or
            "leaky_relu".
        image_shape: (C, H, W) with C * H * W = D (default: (1, sqrt D, sqrt D) if D is a square,
            else (1, 1, D)).
        init_var: the decoder variance at the start of training (and while it is frozen).
        output: "sigmoid" (pixels in [0, 1], default) or "linear".
    """
    if output not in ("sigmoid", "linear"):
        raise ValueError(f"output must be 'sigmoid' or 'linear', got {output!r}")
    D = _positive_int("data_dim", data_dim)
    d = _positive_int("latent_dim", latent_dim)
    hidden = _widths("hidden", hidden)
    if image_shape is None:
        side = math.isqrt(D)
        image_shape = (1, side, side) if side * side == D else (1, 1, D)
    image_shape = tuple(image_shape)
    whole = all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in image_shape)
    if len(image_shape) != 3 or not whole:
        raise ValueError(f"image_shape must be (C, H, W) of positive integers, got {image_shape!r}")
    if math.prod(image_shape) != D:
        raise ValueError(f"image_shape {image_shape!r} does not have data_dim = {D} pixels")

    def chain(sizes: list[int], last: nn.Module | None) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_activation(activation))
        if last is not None:
            layers.append(last)
        return nn.Sequential(*layers)

    encoder = chain([D, *hidden, 2 * d], None)
    decoder = chain([d, *reversed(hidden), D], nn.Sigmoid() if output == "sigmoid" else None)
    return ImageVAE(encoder, decoder, d, image_shape, init_var=init_var)


def conv_vae28(
    latent_dim: int = 8,
    channels: Sequence[int] = (64, 32, 16),
    *,
    hidden: int = 256,
    activation: str = "elu",
    norm: str | None = None,
    upsample: str | None = None,
    init_var: float = 0.003,
) -> ImageVAE:
    """Convolutional VAE for 28x28 grayscale images (D = 784).

    Decoder (``channels = (c7, c14, c28)``)::

        Linear(d, c7*7*7), act, Unflatten(1, (c7, 7, 7)),
        ConvTranspose2d(c7, c14, 4, stride 2, pad 1) [norm] act      7 -> 14
        ConvTranspose2d(c14, c28, 4, stride 2, pad 1) [norm] act    14 -> 28
        Conv2d(c28, 1, 3, pad 1), Sigmoid, Flatten                  (P, 784)

    With ``upsample`` each transposed convolution is ``Upsample(scale 2, mode)`` then
    ``Conv2d(c, c', 3, pad 1)`` (the resize-convolution decoders many users prefer), or with
    ``"pixel_shuffle"`` ``Conv2d(c, 4 c', 3, pad 1)`` then ``PixelShuffle(2)`` (sub-pixel
    convolution).

    Encoder: the mirror image (two stride-2 ``Conv2d``, then ``Linear`` layers through
    ``hidden`` units to 2d).

    Args:
        latent_dim: d.
        channels: (c7, c14, c28), the channels at 7x7, 14x14 and 28x28.
        hidden: width of the encoder's fully connected layer.
        activation: "elu" (default), "softplus", "silu", "tanh", "gelu", "mish", "relu" or
            "leaky_relu".
        norm: None (default), "batch" (``BatchNorm2d``), "group" (``GroupNorm``) or "instance"
            (``InstanceNorm2d``, affine) after each transposed convolution. (Use the decoder in
            eval mode.)
        upsample: None (default: transposed convolutions), "nearest", "bilinear" or
            "pixel_shuffle".
        init_var: the decoder variance at the start of training (and while it is frozen).
    """
    d = _positive_int("latent_dim", latent_dim)
    channels = tuple(channels)  # an iterator is read once
    if len(channels) != 3:
        _bad_channels(channels, 3)
    c7, c14, c28 = _widths("channels", channels, 3)
    hidden = _positive_int("hidden", hidden)
    _norm(norm, 8)  # validate
    if upsample not in (None, "nearest", "bilinear", "pixel_shuffle"):
        raise ValueError(f"upsample must be None, 'nearest', 'bilinear' or 'pixel_shuffle', got {upsample!r}")
    act = lambda: _activation(activation)  # noqa: E731

    def up(a: int, b: int) -> list[nn.Module]:
        if upsample is None:
            return [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
        if upsample == "pixel_shuffle":
            return [nn.Conv2d(a, 4 * b, 3, padding=1), nn.PixelShuffle(2)]
        return [nn.Upsample(scale_factor=2, mode=upsample), nn.Conv2d(a, b, 3, padding=1)]

    encoder = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, c28, 4, stride=2, padding=1), act(),   # 28 -> 14
        nn.Conv2d(c28, c14, 4, stride=2, padding=1), act(),  # 14 -> 7
        nn.Flatten(),
        nn.Linear(c14 * 49, hidden), act(),
        nn.Linear(hidden, 2 * d),
    )  # fmt: skip
    decoder = nn.Sequential(
        nn.Linear(d, c7 * 49), act(),
        nn.Unflatten(1, (c7, 7, 7)),
        *up(c7, c14), *_norm(norm, c14), act(),
        *up(c14, c28), *_norm(norm, c28), act(),
        nn.Conv2d(c28, 1, 3, padding=1), nn.Sigmoid(),
        nn.Flatten(),
    )  # fmt: skip
    return ImageVAE(encoder, decoder, d, (1, 28, 28), init_var=init_var)


def conv_vae64(
    latent_dim: int = 32,
    channels: Sequence[int] = (64, 32, 16, 8, 8),
    *,
    hidden: int = 256,
    activation: str = "elu",
    norm: str | None = None,
    init_var: float = 0.003,
) -> ImageVAE:
    """Convolutional VAE for 64x64 RGB images (D = 12,288), DCGAN-like.

    Decoder (``channels = (c4, c8, c16, c32, c64)``)::

        Linear(d, c4*4*4), act, Unflatten(1, (c4, 4, 4)),
        4 x [ConvTranspose2d(c, c', 4, stride 2, pad 1) [norm] act]   4 -> 8 -> 16 -> 32 -> 64
        Conv2d(c64, 3, 3, pad 1), Sigmoid, Flatten                    (P, 12288)

    Encoder: four stride-2 ``Conv2d`` (64 -> 4, channels mirrored), then ``Linear`` layers
    through ``hidden`` units to 2d.

    Args:
        latent_dim: d.
        channels: (c4, c8, c16, c32, c64), the channels at each resolution.
        hidden: width of the encoder's fully connected layer.
        activation: "elu" (default), "softplus", "silu", "tanh", "gelu", "mish", "relu" or
            "leaky_relu".
        norm: None (default), "batch", "group" or "instance" after each transposed convolution.
        init_var: the decoder variance at the start of training (and while it is frozen).
    """
    d = _positive_int("latent_dim", latent_dim)
    channels = tuple(channels)  # an iterator is read once
    if len(channels) != 5:
        _bad_channels(channels, 5)
    c = _widths("channels", channels, 5)
    hidden = _positive_int("hidden", hidden)
    _norm(norm, 8)
    act = lambda: _activation(activation)  # noqa: E731
    enc: list[nn.Module] = [nn.Unflatten(1, (3, 64, 64))]
    prev = 3
    for ch in reversed(c[:4]):  # 64 -> 32 -> 16 -> 8 -> 4 with c32, c16, c8, c4 channels
        enc += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), act()]
        prev = ch
    enc += [nn.Flatten(), nn.Linear(c[0] * 16, hidden), act(), nn.Linear(hidden, 2 * d)]
    dec: list[nn.Module] = [nn.Linear(d, c[0] * 16), act(), nn.Unflatten(1, (c[0], 4, 4))]
    for a, b in zip(c[:-1], c[1:], strict=True):
        dec += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), *_norm(norm, b), act()]
    dec += [nn.Conv2d(c[-1], 3, 3, padding=1), nn.Sigmoid(), nn.Flatten()]
    return ImageVAE(nn.Sequential(*enc), nn.Sequential(*dec), d, (3, 64, 64), init_var=init_var)


def _bad_channels(channels: object, n: int):
    raise ValueError(f"channels must have {n} entries, got {channels!r}")


__all__ = ["ImageVAE", "conv_vae28", "conv_vae64", "mlp_vae"]
