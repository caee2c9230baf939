"""Geodesics with the lagged linearizations' tangents in bfloat16 against float32, side by side:
the same pairs solved with ``fastgeo.decoders.low_precision.ENABLED`` off and on, in alternating
order for ``--rounds`` rounds (CPU time per pair: a busy machine's noise falls on both alike);
the median of each, LM iterations, and how far the lengths move.

    OMP_NUM_THREADS=1 python bench/bench_bf16_tangents.py --generators mlp32_shapes,mlp64_glyphs \\
        --pairs 16 --rounds 4

Only meaningful where ``fastgeo info`` says bfloat16 tangents are on (CPUs with AVX-512 BF16 or
AMX); elsewhere both sides run float32 and ``ENABLED=True`` forces bfloat16, emulated. Only
lagged linearizations take them (latent d >= 8): on smaller d the script stops at its own check.
"""

from __future__ import annotations

import statistics
import time

from workloads import generator, generator_table, solver_pairs

import fastgeo
from fastgeo.decoders import low_precision


def compare(name: str, pairs: int, rounds: int, seed: int) -> str:
    metric, _, _ = generator(name)
    z0, z1 = solver_pairs(name, pairs, seed=seed)
    fastgeo.geodesics(metric, z0[:1], z1[:1], progress=False)  # warm-up: traces, checks, caches
    times: dict[bool, list[float]] = {False: [], True: []}
    results = {}
    try:
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                low_precision.ENABLED = on
                start = time.process_time()
                results[on] = fastgeo.geodesics(metric, z0, z1, progress=False)
                times[on].append((time.process_time() - start) / len(z0) * 1e3)
    finally:
        low_precision.ENABLED = None
    exact, rounded = results[False], results[True]
    assert rounded.options["tangents"] == "bfloat16", rounded.options["tangents"]
    moved = (rounded.lengths.double() / exact.lengths.double() - 1).abs()
    same = int((rounded.status == exact.status).sum())
    f32, b16 = statistics.median(times[False]), statistics.median(times[True])
    return (
        f"| {name} (d = {metric.latent_dim}) | {len(z0)} | {f32:.1f} | {b16:.1f} | {f32 / b16:.2f}x | "
        f"{exact.iterations.double().mean():.1f} / {rounded.iterations.double().mean():.1f} | "
        f"{moved.mean():.1e} / {moved.max():.1e} | {same} of {len(z0)} |"
    )


def main() -> None:
    generator_table(
        __doc__,
        "mlp32_shapes,mlp64_glyphs",
        "| generator | pairs | float32 ms / pair | bfloat16 ms / pair | speed-up "
        "| LM iterations (f32 / bf16) | length moved, mean / max | same status |",
        compare,
    )


if __name__ == "__main__":
    main()
