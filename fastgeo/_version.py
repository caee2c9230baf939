"""The package version, in one place (pyproject.toml reads it too), and the oldest torch release
it works with."""

import re
import warnings

__version__ = "0.1.0"

# The oldest torch release the test suite passes on, but for the Triton interpreter's tests
# (bench/RESULTS.md, "Older torch releases": 2.8's Triton cannot compile a float64 kernel; 2.6
# and 2.4 fail reading decoders through torch.export, generator files holding code and
# torch.distributed runs). pyproject.toml asks
# for it too; this catches installs that skipped the dependency check (``--no-deps``).
TORCH_FLOOR = (2, 9)


def torch_release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a torch version such as ``"2.13.0+cpu"`` or ``"2.10.0a0+git1234"``;
    None where it does not start with two numbers."""
    parts = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(parts[1]), int(parts[2])) if parts else None


def warn_if_torch_is_too_old(version: str) -> None:
    """A RuntimeWarning (at the user's import) where ``version`` is older than the floor."""
    release = torch_release(version)
    if release is not None and release < TORCH_FLOOR:
        warnings.warn(
            f"fastgeo needs torch >= {TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}, found {version}: on older releases "
            "reading decoders through torch.export, generator files holding code, torch.distributed "
            "runs or float64 Triton kernels fail. Upgrade torch.",
            RuntimeWarning,
            stacklevel=3,
        )
