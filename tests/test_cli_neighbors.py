"""``fastgeo neighbors``: the nearest-neighbour search from the shell, equal to the function's,
its inputs checked before any work (one line, exit 2, naming the option)."""

import numpy as np
import pytest
import torch
from analytic import saved_generator_and_codes

import fastgeo
from fastgeo.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_nn")
    return tmp, saved_generator_and_codes(tmp, 9)


def _run(capsys, *argv):
    argv = [*map(str, argv), "--no-progress", "--max-iter", "20"]
    argv += [] if "--workers" in argv else ["--workers", "1"]
    argv += [] if "-k" in argv else ["-k", "3"]
    code = main(["neighbors", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_neighbors_from_the_command_line(files, capsys, tmp_path):
    tmp, gen = files
    code, err = _run(capsys, gen, tmp / "Z.npy", "-k", 3, "-o", tmp_path / "nn.npz")
    assert code == 0, err
    out = np.load(tmp_path / "nn.npz")
    metric = fastgeo.load_generator(gen)
    Z = torch.from_numpy(np.load(tmp / "Z.npy"))
    res = fastgeo.nearest_neighbors(metric, Z, 3, workers=1, progress=False, max_iter=20)
    assert np.array_equal(out["indices"], res.indices.numpy())
    assert np.array_equal(out["distances"], res.distances.numpy())
    assert out["certified"].all() and out["converged"].all()
    assert (out["status_names"][out["status"]] == "converged").all()
    assert "nearest neighbours of 9 codes" in err[-1]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-k", "0"], ["-k", ">= 1"]),
        (["-k", "9"], ["-k", "at most 8"]),
        (["--tol", "-1"], ["tol"]),
        (["--workers", "0"], ["--workers"]),
        (["--max-candidates", "2"], ["--max-candidates", ">= 3"]),
    ],
)
def test_bad_inputs_are_one_line(files, capsys, tmp_path, monkeypatch, argv, words):
    import fastgeo.cli.neighbors as cli

    monkeypatch.setattr(cli, "nearest_neighbors", lambda *a, **k: pytest.fail("solved before checking"))
    tmp, gen = files
    code, err = _run(capsys, gen, tmp / "Z.npy", "-o", tmp_path / "nn.npz", *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("fastgeo: error: "), err
    for w in words:
        assert w in err[0], err[0]
    code, err = _run(capsys, gen, tmp / "Z.npy", "-o", tmp_path / "nn.npy")
    assert code == 2 and "--output" in err[0] and ".npz" in err[0]
    assert not (tmp_path / "nn.npz").exists()


def test_k_beyond_the_references_names_y(files, capsys, tmp_path, monkeypatch):
    import fastgeo.cli.neighbors as cli

    monkeypatch.setattr(cli, "nearest_neighbors", lambda *a, **k: pytest.fail("solved before checking"))
    tmp, gen = files
    np.save(tmp_path / "y.npy", np.load(tmp / "Z.npy")[:5])
    argv = ("-o", tmp_path / "nn.npz", "-k", 6, "--y", tmp_path / "y.npy")
    code, err = _run(capsys, gen, tmp / "Z.npy", *argv)
    assert code == 2 and len(err) == 1 and "-k must be at most 5 (the codes of --y)" in err[0], err
