"""A small VAE for the two-moons demo (fastgeo is not a VAE library: this is just enough to get a
decoder mean and latent codes to draw geodesics on).

Gaussian encoder ``q(z|x) = N(m(x), diag(s(x)^2))`` and Gaussian decoder with mean ``mu(z)`` and
one learned variance per data dimension: during VAE training the variance is homoscedastic, and
the demo replaces it afterwards by the RBF precision network (Arvanitidis et al., 2018 train the
mean first and the variance network second, for the same reason).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _checks
from .._progress import progress_iter


def mlp(sizes: list[int]) -> nn.Sequential:
    """MLP with ELU between layers (smooth, so the metric's Jacobians are well defined)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """MLP VAE: data (..., D) <-> latent (..., d).

    Attributes:
        encoder: (..., D) -> (..., 2d), the posterior mean and log-variance.
        decoder_mean: (..., d) -> (..., D), the ``mu`` of the generator.
        log_var: (D,) decoder log-variance used during training only.
    """

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: int = 64, init_var: float = 0.1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([data_dim, hidden, hidden, 2 * latent_dim])
        self.decoder_mean = mlp([latent_dim, hidden, hidden, data_dim])
        self.log_var = nn.Parameter(torch.full((data_dim,), math.log(init_var)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance: (..., D) -> (..., d) x 2."""
        h = self.encoder(x)
        return h[..., : self.latent_dim], h[..., self.latent_dim :]

    def elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean ELBO of a batch (one reparametrized sample): x (M, D) -> scalar."""
        m, logv = self.encode(x)
        eps = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
        z = m + (0.5 * logv).exp() * eps
        mu = self.decoder_mean(z)
        loglik = -0.5 * (((x - mu) ** 2) / self.log_var.exp() + self.log_var + math.log(2 * math.pi))
        kl = 0.5 * (m.pow(2) + logv.exp() - 1 - logv)
        return loglik.sum(-1).mean() - kl.sum(-1).mean()


def train_vae(
    x: Tensor,
    *,
    latent_dim: int = 2,
    hidden: int = 64,
    steps: int = 3000,
    lr: float = 3e-3,
    init_var: float = 0.1,
    freeze_var: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> VAE:
    """Train a :class:`VAE` on ``x`` (M, D) with full-batch Adam; deterministic for a seed.

    The decoder variance is frozen at ``init_var`` for the first ``freeze_var`` fraction of the
    steps: fitting the mean first keeps a freshly initialized model from explaining the data as
    noise. A small ``init_var`` makes that first phase fit the mean closely, which gives sharper
    latent codes (the demo uses 0.01 for the first 30 %; the defaults, 0.1 for 20 %, are those
    the test generators were made with).
    """
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (M, D) tensor with M >= 1, got {x!r:.80}")
    latent_dim = _checks.integer("latent_dim", latent_dim, 1)
    hidden = _checks.integer("hidden", hidden, 1)
    steps = _checks.integer("steps", steps, 0)
    seed = _checks.seed("seed", seed, allow_none=False)
    init_var = _checks.positive_float("init_var", init_var)
    if not 0 <= freeze_var <= 1:
        raise ValueError(f"freeze_var must be in [0, 1], got {freeze_var!r}")
    with torch.random.fork_rng(devices=[]):  # the layers' initialization, seeded: the caller's RNG stays
        torch.manual_seed(seed)
        vae = VAE(x.shape[1], latent_dim, hidden, init_var).to(x.dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr / 10)
    warmup = int(freeze_var * steps + 1e-9)
    bar = progress_iter(range(steps), progress, "train VAE")
    for step in bar:
        vae.log_var.requires_grad_(step >= warmup)
        opt.zero_grad()
        loss = -vae.elbo(x, gen)
        loss.backward()
        opt.step()
        sched.step()
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae
