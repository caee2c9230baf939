"""``fastgeo bench``: the benchmark suite as part of the installed package.

Three layers, each timed with plain ``time.perf_counter`` (warm-up, then the minimum over
rounds) on a synthetic generator built here, so that it runs from an installed package:

- ``ops``: the three ops, forward and forward+backward, each compiled backend against the
  pure-PyTorch reference at a few batch sizes;
- ``solver``: ``method="default"``, ``"fast"`` and ``"paper"`` (and StochMan if importable) on
  the same pairs, time and excess length against ``method="dense"`` in float64;
- ``pairwise``: :func:`fastgeo.pairwise_distances` time and time per geodesic against M.

:func:`run` returns (and writes) the results; :mod:`fastgeo.cli` exposes it as ``fastgeo bench``.
"""

from .runner import run
from .settings import LAYERS, Settings, settings_for

__all__ = ["LAYERS", "Settings", "run", "settings_for"]
