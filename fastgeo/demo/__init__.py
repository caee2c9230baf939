"""The two-moons demo (``fastgeo demo``): see :func:`run_demo`."""

from .run import run_demo

__all__ = ["run_demo"]
