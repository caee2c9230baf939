"""``pairwise_distances(..., shared_starts=True)`` against the default on every pair of M random
codes of a generator, one process (workers=1): CPU time, the code graph's edges, LM iterations
and decoder work per pair, and the entries against the default's (each entry is a curve's length:
shorter is better)::

    OMP_NUM_THREADS=1 python bench/bench_shared_starts.py --generator mlp16_shapes --m 40 --seed 0

``--options`` passes module constants by their dotted names (JSON, as ``bench_variants.py``) to
the shared-starts run, e.g. ``'{"fastgeo.pairwise.shared_starts.RACE_ALONE": false}'``.
"""

from __future__ import annotations

import json
import time

import torch
from bench_random_pairs import codes_parser, random_codes
from bench_variants import constants
from workloads import environment_line, generator

import fastgeo


def run(metric: fastgeo.ExpectedMetric, Z: torch.Tensor, **kw) -> tuple[torch.Tensor, object, float]:
    t = time.process_time()
    D, rep = fastgeo.pairwise_distances(metric, Z, workers=1, progress=False, return_report=True, **kw)
    return D.double(), rep, time.process_time() - t


def main() -> None:
    p = codes_parser(__doc__, 40)
    p.add_argument("--options", default="{}", help="module constants of the shared-starts run (JSON)")
    args = p.parse_args()
    metric = generator(args.generator)[0]
    Z = random_codes(args.generator, args.m, args.seed)
    fastgeo.geodesics(metric, Z[:2], Z[2:4], progress=False)  # the latent graph, built once
    print(environment_line())
    D0, r0, t0 = run(metric, Z)
    with constants(json.loads(args.options)):
        D1, r1, t1 = run(metric, Z, shared_starts=True)
    M = Z.shape[0]
    upper = torch.triu(torch.ones(M, M, dtype=torch.bool), 1)
    rel = D1[upper] / D0[upper] - 1
    n = int(upper.sum())
    it0, it1 = (float(r.iterations[upper].double().mean()) for r in (r0, r1))
    print(f"{args.generator}, M = {M} (seed {args.seed}), {n} pairs, {r1.graph_edges} edges, {args.options}")
    print(
        f"  CPU s: default {t0:.1f}, shared starts {t1:.1f}: {t0 / t1:.2f}x; LM iterations per pair "
        f"{it0:.1f} -> {it1:.1f}; decoder JVPs per pair {r0.decoder_jvps / n:.3g} -> "
        f"{r1.decoder_jvps / n:.3g}"
    )
    print(
        f"  shared / default - 1: mean {100 * rel.mean():+.4f} %, max {100 * rel.max():+.3f} %, min "
        f"{100 * rel.min():+.3f} %; pairs > +0.1 %: {int((rel > 1e-3).sum())}, < -0.1 %: "
        f"{int((rel < -1e-3).sum())}; converged {r0.n_converged} -> {r1.n_converged} of {n}"
    )


if __name__ == "__main__":
    main()
