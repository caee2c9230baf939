"""Training and evaluation of the image VAEs of :mod:`fastgeo.demo.vaes`: the negative ELBO
with the decoder variance frozen for the first part of training, and the statistics that tell a
trained model from a collapsed one (reconstruction error, KL per latent dimension, active
units)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import _checks
from .._progress import progress_iter
from .vaes import ImageVAE


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of a module."""
    return sum(p.numel() for p in module.parameters())


@dataclass
class TrainLog:
    """What :func:`train_vae` did: steps, wall and CPU time (of this process, all threads: on a
    shared machine the CPU time is the steadier measure), and the loss (negative ELBO per image,
    nats, averaged over each epoch)."""

    steps: int
    seconds: float
    cpu_seconds: float = 0.0
    epoch_loss: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.epoch_loss[-1] if self.epoch_loss else float("nan")


def train_vae(
    vae: ImageVAE,
    x: Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    freeze_var: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> TrainLog:
    """Train ``vae`` on ``x`` (M, D) with minibatch Adam; deterministic for a seed (on one
    machine and thread count).

    The learning rate follows a cosine from ``lr`` to ``lr / 10``. The decoder variance is
    frozen (at the model's ``init_var``) for the first ``freeze_var`` fraction of the steps. This
    function seeds the batch order and the reparametrization noise; seed the model's
    initialization yourself (``torch.manual_seed`` before building it). At the end the model is
    in eval mode with gradients off.

    Args:
        vae: the model (train mode is set here).
        x: (M, D) training images, same dtype as the model.
        epochs: passes over the data (>= 1).
        batch_size: images per step (>= 1); the last, smaller batch of an epoch is dropped.
        lr: Adam learning rate.
        freeze_var: fraction of the steps with the decoder variance frozen, in [0, 1].
        seed: seed of the batch order and the noise.
        progress: show a tqdm bar over the epochs (if tqdm is installed).
    Returns:
        a :class:`TrainLog`.
    """
    if not isinstance(vae, ImageVAE):
        raise TypeError(f"vae must be an ImageVAE, got {type(vae).__name__}")
    if x.ndim != 2 or x.shape[1] != vae.data_dim:
        raise ValueError(f"x must have shape (M, {vae.data_dim}), got {tuple(x.shape)}")
    epochs = _checks.integer("epochs", epochs, 1)
    batch_size = _checks.integer("batch_size", batch_size, 1)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0 <= freeze_var <= 1:
        raise ValueError(f"freeze_var must be in [0, 1], got {freeze_var!r}")
    M = x.shape[0]
    per_epoch = max(M // batch_size, 1)
    steps = epochs * per_epoch
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for p in vae.parameters():
        p.requires_grad_(True)
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    frozen_steps = int(freeze_var * steps)
    log = TrainLog(steps=steps, seconds=0.0)
    t0, c0 = time.perf_counter(), time.process_time()
    step = 0
    for _ in progress_iter(range(epochs), progress, "train VAE"):
        order = torch.randperm(M, generator=gen, device="cpu")
        total = 0.0
        for b in range(per_epoch):
            batch = x[order[b * batch_size : (b + 1) * batch_size]]
            vae.log_var.requires_grad_(step >= frozen_steps)
            opt.zero_grad()
            loss = -vae.elbo(batch, gen)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            step += 1
        log.epoch_loss.append(total / per_epoch)
    log.seconds = time.perf_counter() - t0
    log.cpu_seconds = time.process_time() - c0
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return log


@torch.no_grad()
def evaluate_vae(
    vae: ImageVAE, x: Tensor, *, batch_size: int = 500, seed: int = 0, threshold: float = 0.01
) -> dict:
    """Fit statistics of a trained VAE on images ``x`` (M, D).

    Returns a dict with:

    - ``neg_elbo``: negative ELBO per image (nats, one seeded sample);
    - ``mse``: mean squared error per pixel of the reconstruction at the posterior mean;
    - ``kl``: KL divergence per image (nats) and ``kl_per_dim`` (d,) its split over dimensions;
    - ``activity`` (d,): the variance over the data of each posterior mean, and ``active_units``:
      how many exceed ``threshold`` (Burda et al., 2016: inactive dimensions are ignored by the
      decoder, their posterior is the prior);
    - ``latents`` (M, d): the posterior means.
    """
    vae.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ll, kls, sqs, means = [], [], [], []
    for a in range(0, x.shape[0], batch_size):
        xb = x[a : a + batch_size]
        loglik, kl = vae.elbo_terms(xb, gen)
        m = vae.encode(xb)[0]
        ll.append(loglik)
        kls.append(kl)
        sqs.append((vae.decoder_mean(m) - xb).pow(2).mean(-1))
        means.append(m)
    loglik, kl, sq, Z = torch.cat(ll), torch.cat(kls), torch.cat(sqs), torch.cat(means)
    activity = Z.var(0)
    return {
        "neg_elbo": float(kl.sum(-1).mean() - loglik.mean()),
        "mse": float(sq.mean()),
        "kl": float(kl.sum(-1).mean()),
        "kl_per_dim": kl.mean(0),
        "activity": activity,
        "active_units": int((activity > threshold).sum()),
        "latents": Z,
    }


__all__ = ["TrainLog", "count_parameters", "evaluate_vae", "train_vae"]
