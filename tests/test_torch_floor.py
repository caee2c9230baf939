"""The torch floor: pyproject.toml and the import-time check agree, the installed torch is above
it, and an older one gets a RuntimeWarning at the user's import (installs that skip pip's
dependency check, ``--no-deps``)."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastgeo._version import TORCH_FLOOR, torch_release, warn_if_torch_is_too_old

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "version, release",
    [("2.13.0+cpu", (2, 13)), ("2.10.0a0+git1234", (2, 10)), ("3.0", (3, 0)), ("nightly", None)],
)
def test_torch_release(version, release):
    assert torch_release(version) == release


def test_the_floor_is_the_projects_and_this_torch_is_above_it():
    floor = re.search(r'"torch>=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert floor is not None and (int(floor[1]), int(floor[2])) == TORCH_FLOOR
    assert torch_release(torch.__version__) >= TORCH_FLOOR


def test_older_torch_warns_newer_and_unknown_do_not():
    floor = f"{TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}"
    with pytest.warns(RuntimeWarning, match=rf"fastgeo needs torch >= {re.escape(floor)}, found 2\.6\.0"):
        warn_if_torch_is_too_old("2.6.0+cu124")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_torch_is_too_old(f"{floor}.0")
        warn_if_torch_is_too_old("2.13.0+cpu")
        warn_if_torch_is_too_old("unknown")


def test_the_warning_comes_at_import():
    code = (
        "import warnings, torch\n"
        "torch.__version__ = '2.4.1+cu121'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastgeo\n"
        "print(sum('fastgeo needs torch' in str(x.message) for x in w))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
