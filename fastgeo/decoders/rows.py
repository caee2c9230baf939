"""Calling a decoder mean on many points: in chunks of bounded memory, each curve's points padded
to whole blocks of rows, so that a point's value does not depend on the call it falls in."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .forward_mode import ROW_ALIGN, activation_width
from .layout import channels_last

# Bytes of the decoder's widest activation per call of the mean: longer inputs are decoded in
# chunks (a convolutional decoder holds channels x pixels per point, many times D). Decoders
# whose structure is not recognized are assumed GUESSED_WIDTH x D wide.
# 4 MB, not the 256 MB these chunks had: chunks that stay in cache decode conv decoders 1.2x
# faster, their gradients 1.35x (conv8 MNIST-like decoder, 768 points, 1 thread); MLPs even.
DECODE_BYTES = 1 << 22
DECODE_BYTES_ELSEWHERE = 1 << 28  # on other devices than the CPU: memory alone counts
GUESSED_WIDTH = 16
MIN_DECODE_ROWS = 64
# ROW_ALIGN (forward_mode): rows per block of the decoder's matrix products that a curve's points fill


def decode_in_rows(
    mean: Callable[[Tensor], Tensor],
    structure: Callable[[Tensor], Tensor],
    z: Tensor,
    data_dim: int,
    width: int | None,
    empty_probe: Tensor,
) -> Tensor:
    """``mean`` (P, d) -> (P, F) at points (..., d): (..., F). Curves (..., N, d) have their
    points padded to a multiple of ROW_ALIGN rows (the last point repeated): BLAS kernels round
    a row differently in a partial block of rows, and without the padding a curve's values would
    depend on how many curves share the call. ``structure``: the decoder whose layers size the
    chunks and choose the layout (the user's mean; ``mean`` may stand in for it); ``data_dim``:
    its D; ``width``: F where known (it must be for no points, else ``mean(empty_probe)`` tells).
    """
    n = z.shape[-2] if z.dim() >= 3 else 0
    pad = -n % ROW_ALIGN
    if pad:
        z = torch.cat([z, z[..., -1:, :].expand(*z.shape[:-2], pad, z.shape[-1])], dim=-2)
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    rows = rows_per_call(structure, flat, data_dim)
    with channels_last(structure, flat):  # convolutions: oneDNN's fast layout on CPU
        if flat.shape[0] == 0:  # not every decoder takes an empty batch (instance norm raises)
            if width is None:
                width = mean(empty_probe).shape[-1]
            out = flat.new_zeros(0, width) + flat[:, :1]  # (still a function of z)
        elif flat.shape[0] <= rows:
            out = mean(flat)
        else:  # in chunks: bounded memory whatever the number of points
            out = torch.cat([mean(chunk) for chunk in flat.split(rows)])
    out = out.reshape(*lead, out.shape[-1])
    return out[..., :n, :] if pad else out


def rows_per_call(structure: Callable[[Tensor], Tensor], flat: Tensor, data_dim: int) -> int:
    """Points per call of the mean within DECODE_BYTES (at least MIN_DECODE_ROWS)."""
    P, size = flat.shape[0], flat.element_size()
    budget = DECODE_BYTES if flat.device.type == "cpu" else DECODE_BYTES_ELSEWHERE
    if P * GUESSED_WIDTH * data_dim * size <= budget:
        return P  # small: no need to know the width
    width = activation_width(structure, flat[:4].detach())
    width = GUESSED_WIDTH * data_dim if width is None else max(width, data_dim)
    return max(MIN_DECODE_ROWS, budget // (width * size) // ROW_ALIGN * ROW_ALIGN)
