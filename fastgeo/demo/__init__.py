"""The two-moons demo (``fastgeo demo``): see :func:`run_demo`."""

from .run import load_demo_generator, run_demo, save_demo_generator

__all__ = ["load_demo_generator", "run_demo", "save_demo_generator"]
