"""Whether a decoder's tangents may be pushed through it in bfloat16 on a device.

The Gauss-Newton matrix of a lagged linearization (:mod:`fastgeo.solver.levenberg_marquardt`)
only shapes the step: the gradient, the energy and every convergence test stay exact (float32,
by reverse mode), so its Jacobians may carry bfloat16's 3 significant digits. On CPUs with
AVX-512 BF16 or AMX, oneDNN multiplies bfloat16 matrices about 2.8x faster than float32 and
convolves them 1.6-1.9x faster (one thread, an AMD EPYC with AVX-512 BF16): the stacked
tangents, most of a linearization's time at d >= 16, are cheaper there. Elsewhere bfloat16 is
emulated and slower, and on GPUs it is unmeasured: off. ``FASTGEO_BF16_TANGENTS=0`` turns it off,
``=1`` on (any device).
"""

from __future__ import annotations

import functools
import os

import torch

ENV = "FASTGEO_BF16_TANGENTS"
ENABLED: bool | None = None  # a switch for experiments (bench/bench_variants.py); None: as below


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether tangents go through decoders on ``device`` in bfloat16 (see the module)."""
    if ENABLED is not None:
        return ENABLED
    setting = os.environ.get(ENV, "")
    if setting not in ("", "0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1 (or unset: by the hardware), got {setting!r}")
    if setting:
        return setting == "1"
    return torch.device(device).type == "cpu" and _cpu_has_bfloat16()


@functools.cache
def _cpu_has_bfloat16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: absent in some builds
    try:
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    except Exception:  # noqa: BLE001 - a build that cannot tell: float32, the safe side
        return False
