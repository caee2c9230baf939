"""The package's import contracts (pyproject.toml, ``[tool.importlinter]``): imports run one way,
face -> all pairs -> solver -> geometry -> ops -> backends -> utilities, and no package has an
import circle between its modules."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_import_contracts_hold():
    """lint-imports (import-linter, in the test extra) finds no broken contract; missing, the test
    fails."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: install the test extra (pip install -e '.[test]')")
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_operator_is_registered_on_import():
    """``import fastgeo`` alone registers every operator ``fastgeo info`` lists (fresh process)."""
    code = (
        "import torch, fastgeo\n"
        "from fastgeo.ops.registry import OPS\n"
        "from fastgeo.ops.library import BACKWARD\n"
        "missing = [op for op in OPS + BACKWARD if not hasattr(torch.ops.fastgeo, op)]\n"
        "assert not missing, missing\n"
        "assert all(torch._C._dispatch_has_kernel_for_dispatch_key(f'fastgeo::{op}', 'CPU') for op in OPS)\n"
        "print('ok')\n"
    )
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
