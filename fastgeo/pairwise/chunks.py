"""One chunk of pairs solved, as the all-pairs runs keep it (``fastgeo.pairwise``), and the
process's place under ``torch.distributed``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._quiet import quiet
from ..metric import ExpectedMetric
from ..solver import geodesics
from ..solver.call_warnings import NO_FINITE_LENGTH
from ..solver.result import NONFINITE


def no_finite_path(caller: str, n: int) -> str:
    """The warning of ``n`` entries without a finite path (inf, status ``nonfinite``)."""
    return (
        f"{caller}: {n} entries are inf (status nonfinite): no finite path was found between those "
        "codes (their solves did not end finite and the metric is not finite along their straight line "
        "either: a decoder mean NaN or inf between them, or an RBF precision with zeta = 0)"
    )


def dist_info() -> tuple[int, int]:
    """(rank, world size): (0, 1) without ``torch.distributed``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(t: Tensor, device: torch.device) -> None:
    """Sum ``t`` over the ``torch.distributed`` processes, in place, the reduction run on
    ``device`` (the metric's: NCCL groups have no CPU backend)."""
    if t.device == device:
        torch.distributed.all_reduce(t)
        return
    on_device = t.to(device)
    torch.distributed.all_reduce(on_device)
    t.copy_(on_device.to(t.device))


def solve_chunk(metric: ExpectedMetric, a: Tensor, b: Tensor, options: dict[str, Any]) -> dict[str, Any]:
    """Geodesics ``a[k] -> b[k]``: their lengths (never NaN: a non-finite result falls back to the
    straight line, flagged ``nonfinite``, and to inf where that is not finite either: one such
    pair does not cost the others), status codes and iterations on the CPU, and the decoder
    work."""
    with quiet(NO_FINITE_LENGTH):  # the run reports them itself (and workers' would be repeated)
        res = geodesics(metric, a, b, progress=False, **options)
    lengths, status = res.lengths, res.status_code
    bad = ~torch.isfinite(lengths)
    if bool(bad.any()):  # never hand a NaN out: fall back to the straight line, flagged
        lengths = torch.where(bad, res.straight_lengths, lengths)
        status = status.masked_fill(bad, NONFINITE)
        if not bool(torch.isfinite(lengths).all()):
            lengths = torch.where(torch.isfinite(lengths), lengths, torch.inf)
    return {
        "lengths": lengths.detach().cpu(),
        "status": status.cpu(),
        "iterations": res.iterations.to(torch.int32).cpu(),
        "decoder_evals": int(res.decoder_evals),
        "decoder_jvps": int(res.decoder_jvps),
    }
