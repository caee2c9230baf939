"""``fastgeo distances`` checks every path and input before any work, reports a user's mistake
as one line (``fastgeo: error: ...``, exit 2) naming the option, and leaves no partial output."""

from pathlib import Path

import numpy as np
import pytest
import torch
from analytic import saved_generator_and_codes

import fastgeo
from fastgeo import _checks
from fastgeo.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    return tmp, saved_generator_and_codes(tmp, 4)


def run_cli(capsys, *argv):
    argv = [*map(str, argv), "--no-progress"]
    code = main(["distances", *argv, *([] if "--max-iter" in argv else ["--max-iter", "5"])])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def expect_error(capsys, words, *argv):
    code, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("fastgeo: error: "), err
    for w in words:
        assert w in err[0], err[0]


def solving_forbidden(monkeypatch):
    import fastgeo.cli.distances as cli

    def fail(*a, **k):
        raise AssertionError("solved before checking every input")

    monkeypatch.setattr(cli, "pairwise_distances", fail)


def test_paths_are_checked_before_any_work(files, capsys, monkeypatch, tmp_path):
    tmp, gen = files
    solving_forbidden(monkeypatch)
    Z = tmp / "Z.npy"
    expect_error(capsys, ["--output", "does not exist"], gen, Z, "-o", tmp_path / "missing" / "D.npy")
    expect_error(capsys, ["--output", ".npy"], gen, Z, "-o", tmp_path / "D.txt")
    expect_error(
        capsys, ["--report", ".npz"], gen, Z, "-o", tmp_path / "D.npy", "--report", tmp_path / "r.npy"
    )
    expect_error(capsys, ["--report", "does not exist"], gen, Z, "-o", tmp_path / "D.npy", "--report",
                 tmp_path / "nope" / "r.npz")  # fmt: skip
    expect_error(
        capsys, ["generator", "not a file"], tmp_path / "none.safetensors", Z, "-o", tmp_path / "D.npy"
    )
    expect_error(capsys, ["latents", "not a file"], gen, tmp_path / "none.npy", "-o", tmp_path / "D.npy")
    (tmp_path / "ck").write_text("x")
    expect_error(capsys, ["--checkpoint", "not a folder"], gen, Z, "-o", tmp_path / "D.npy", "--checkpoint",
                 tmp_path / "ck")  # fmt: skip
    assert not (tmp_path / "D.npy").exists()
    # an output that is an input would overwrite it
    expect_error(capsys, ["--output", "is the latents file", "overwritten"], gen, Z, "-o", Z)
    np.save(tmp_path / "Y.npy", np.zeros((2, 2)))
    expect_error(capsys, ["--output", "is --y"], gen, Z, "--y", tmp_path / "Y.npy", "-o", tmp_path / "Y.npy")
    assert np.load(Z).shape == (4, 2)
    # a checkpoint folder where an output goes (found before the run, not when writing it)
    expect_error(capsys, ["--output", "is --checkpoint"], gen, Z, "-o", tmp_path / "S.npy", "--checkpoint",
                 tmp_path / "S.npy")  # fmt: skip
    expect_error(capsys, ["--report", "is --checkpoint"], gen, Z, "-o", tmp_path / "D.npy", "--report",
                 tmp_path / "r.npz", "--checkpoint", tmp_path / "r.npz")  # fmt: skip
    expect_error(capsys, ["--no-chains", "--mode exact"], gen, Z, "-o", tmp_path / "D.npy", "--mode", "graph",
                 "--no-chains")  # fmt: skip
    expect_error(capsys, ["--no-chains", "--y"], gen, Z, "--y", tmp_path / "Y.npy", "-o", tmp_path / "D.npy",
                 "--no-chains")  # fmt: skip
    assert not any(tmp_path.glob("[SD].npy")) and not (tmp_path / "r.npz").exists()


def test_convert_refuses_to_overwrite_its_source(files, capsys):
    tmp, gen = files
    before = gen.read_bytes()
    assert main(["convert", str(gen), str(gen)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target" in err[0] and "overwritten" in err[0]
    assert gen.read_bytes() == before


def test_a_device_this_torch_lacks_is_one_line(files, capsys, monkeypatch, tmp_path):
    tmp, gen = files
    solving_forbidden(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expect_error(capsys, ["--device", "no usable CUDA"], gen, tmp / "Z.npy", "-o", tmp_path / "D.npy",
                 "--device", "cuda")  # fmt: skip
    expect_error(capsys, ["--device", "not a torch device"], gen, tmp / "Z.npy", "-o", tmp_path / "D.npy",
                 "--device", "warp9")  # fmt: skip


def lacking(device: str) -> bool:
    try:
        torch.empty(0, device=device)
    except Exception:
        return True
    return False


@pytest.mark.parametrize("device", ["xpu", "hpu:1"])
def test_a_device_type_this_build_lacks_is_refused(device, capsys, monkeypatch, tmp_path):
    """torch names xpu, hpu, mps, ... in every build; one it lacks is a ValueError naming the
    argument, not an AssertionError or ImportError from deep in the work."""
    import fastgeo.benchmarks.runner as runner

    if not lacking(device):
        pytest.skip(f"this torch has {device}")
    with pytest.raises(ValueError, match=f"--device: '{device}', but this torch cannot make tensors"):
        _checks.device("--device", device)
    monkeypatch.setattr(runner, "main", lambda *a, **k: pytest.fail("ran before checking"))
    assert main(["bench", "--tiny", "--device", device, "--out", str(tmp_path / "bench")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastgeo: error: --device"), err
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize(
    "option,value,words",
    [
        ("--memory-mb", "nan", ["--memory-mb", "finite"]),
        ("--memory-mb", "-1", ["--memory-mb"]),
        ("--chunk-size", "0", ["--chunk-size", ">= 1"]),
        ("--tol", "inf", ["--tol", "finite"]),
        ("--tol", "-1", ["--tol", "finite"]),
        ("--n-points", "1", ["--n-points", ">= 2"]),
        ("--n-points", "3", ["n_points"]),
        ("--m", "0", ["--m must", ">= 1"]),
        ("--max-iter", "0", ["--max-iter", ">= 1"]),
        ("--max-iter", "-3", ["--max-iter", ">= 1"]),
    ],
)
def test_numbers_are_checked_before_any_work(files, capsys, monkeypatch, tmp_path, option, value, words):
    tmp, gen = files
    solving_forbidden(monkeypatch)
    expect_error(capsys, words, gen, tmp / "Z.npy", "-o", tmp_path / "D.npy", option, value)


@pytest.mark.parametrize(
    "name,array,words",
    [
        ("bool", np.ones((3, 2), dtype=bool), ["bool", "floats"]),
        ("complex", np.ones((3, 2), dtype=complex), ["complex", "floats"]),
        ("ints", np.ones((3, 2), dtype=np.int64), ["int64", "floats"]),
        ("object", np.array([[1.0, "a"], [2.0, "b"]], dtype=object), ["latents", "cannot read"]),
        ("wide", np.ones((3, 5)), ["(3, 5)", "needs 2 columns"]),
        ("nan", np.array([[0.0, np.nan], [1.0, 1.0]]), ["NaN"]),
    ],
)
def test_latents_are_checked(files, capsys, monkeypatch, tmp_path, name, array, words):
    tmp, gen = files
    solving_forbidden(monkeypatch)
    path = tmp_path / f"{name}.npy"
    np.save(path, array, allow_pickle=True)
    expect_error(capsys, words, gen, path, "-o", tmp_path / "D.npy")


def test_npz_latents_and_code_files(files, capsys, tmp_path):
    tmp, gen = files
    np.savez(tmp_path / "Z.npz", Z=np.zeros((3, 2)))
    expect_error(capsys, ["latents", ".npy"], gen, tmp_path / "Z.npz", "-o", tmp_path / "D.npy")
    # an archive under a .npy name was an AttributeError's traceback
    (tmp_path / "Z.npz").rename(tmp_path / "zip.npy")
    expect_error(capsys, ["latents", ".npz archive"], gen, tmp_path / "zip.npy", "-o", tmp_path / "D.npy")
    code_file = fastgeo.save_generator(tmp_path / "g.pt2", fastgeo.load_generator(gen), format="export")
    expect_error(capsys, ["--trust"], code_file, tmp / "Z.npy", "-o", tmp_path / "D.npy")
    with pytest.warns(UserWarning, match="trusted"):
        code, _ = run_cli(capsys, code_file, tmp / "Z.npy", "-o", tmp_path / "D.npy", "--trust")
    assert code == 0 and np.load(tmp_path / "D.npy").shape == (4, 4)


def test_big_endian_latents_work_and_outputs_are_whole(files, capsys, tmp_path):
    tmp, gen = files
    Z = np.load(tmp / "Z.npy")
    np.save(tmp_path / "Zbe.npy", Z.astype(">f8"))
    np.save(tmp_path / "Zld.npy", Z.astype(np.longdouble))  # long doubles: torch has no such dtype
    code, err = run_cli(capsys, gen, tmp_path / "Zld.npy", "-o", tmp_path / "Dld.npy")
    assert code == 0, err
    stale = tmp_path / ".D.npy.abc.tmp"
    stale.write_bytes(b"left by a killed run")
    code, err = run_cli(
        capsys, gen, tmp_path / "Zbe.npy", "-o", tmp_path / "D.npy", "--report", tmp_path / "r.npz"
    )
    assert code == 0, err
    D = fastgeo.pairwise_distances(
        fastgeo.load_generator(gen), torch.from_numpy(Z), progress=False, max_iter=5
    )
    assert np.array_equal(np.load(tmp_path / "D.npy"), D.numpy())
    assert not stale.exists() and not list(tmp_path.glob(".*.tmp"))


def test_report_failure_leaves_no_matrix(files, capsys, monkeypatch, tmp_path):
    tmp, gen = files
    import fastgeo.cli.distances as cli

    real = cli.atomic_write

    def fail_on_report(path, write):
        if str(path).endswith(".npz"):
            raise OSError("disk full")
        real(path, write)

    monkeypatch.setattr(cli, "atomic_write", fail_on_report)
    expect_error(
        capsys, ["disk full"], gen, tmp / "Z.npy", "-o", tmp_path / "D.npy", "--report", tmp_path / "r.npz"
    )
    assert not (tmp_path / "D.npy").exists() and not (tmp_path / "r.npz").exists()


def test_debug_shows_the_traceback(files, tmp_path):
    tmp, gen = files
    with pytest.raises(ValueError, match="must end in .npy"):
        main(["--debug", "distances", str(gen), str(tmp / "Z.npy"), "-o", str(tmp_path / "D.txt")])


def test_convert_a_first_format_file(capsys, tmp_path):
    """``fastgeo convert`` rewrites a code file (trusted) as a safe file that loads without trust."""
    legacy = Path(__file__).parent / "data" / "two_moons.pt2"
    target = tmp_path / "moons.safetensors"
    assert main(["convert", str(legacy), str(target)]) == 2
    assert "--trust" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="trusted"):
        assert main(["convert", str(legacy), str(target), "--trust"]) == 0
    safe = fastgeo.load_generator(target)
    with pytest.warns(UserWarning):
        old = fastgeo.load_generator(legacy, trust=True)
    z = fastgeo.load_extra(target)["latents"][:20]
    assert torch.equal(safe.mean(z), old.mean(z))


def test_graph_mode_from_the_command_line(files, capsys, monkeypatch, tmp_path):
    """--mode graph runs the graph mode (its matrix, its error in the printed report); its own
    options are checked before any work."""
    tmp, gen = files
    graph = [gen, tmp / "Z.npy", "-o", tmp_path / "D.npy", "--mode", "graph"]
    code, err = run_cli(capsys, *graph, "--neighbors", "2", "--error-sample", "3")
    assert code == 0, err
    Z = torch.from_numpy(np.load(tmp / "Z.npy"))
    kw = dict(mode="graph", neighbors=2, error_sample=3, progress=False, max_iter=5)
    D = fastgeo.pairwise_distances(fastgeo.load_generator(gen), Z, **kw)
    assert np.array_equal(np.load(tmp_path / "D.npy"), D.numpy())
    assert "graph of" in err[-1] and "random pairs" in err[-1]
    code, err = run_cli(capsys, *graph, "--neighbors", "2", "--error-sample", "3", "--straight")
    assert code == 0, err
    D = fastgeo.pairwise_distances(fastgeo.load_generator(gen), Z, straight=True, **kw)
    assert np.array_equal(np.load(tmp_path / "D.npy"), D.numpy())
    code, err = run_cli(capsys, *graph, "--neighbors", "2", "--error-sample", "3", "--edges", "exact")
    assert code == 0, err
    D = fastgeo.pairwise_distances(fastgeo.load_generator(gen), Z, edges="exact", **kw)
    assert np.array_equal(np.load(tmp_path / "D.npy"), D.numpy())
    # --neighbors 0 without --straight: the library's default (off in d = 2): its error, one line
    expect_error(capsys, ["neighbors=0", "needs straight=True"], *graph, "--neighbors", "0")
    solving_forbidden(monkeypatch)
    expect_error(capsys, ["--neighbors", ">= 0"], *graph, "--neighbors", "-1")
    expect_error(capsys, ["--error-sample", ">= 0"], *graph, "--error-sample", "-2")
    expect_error(capsys, ["--workers", ">= 1"], *graph, "--workers", "0")
    expect_error(capsys, ["--neighbors 0 needs --straight"], *graph, "--neighbors", "0", "--no-straight")


def test_neighbors_0_takes_the_librarys_default_of_straight(capsys, tmp_path):
    """--neighbors 0 without --straight was refused although the straight segments are on by
    default in d >= 4 (the library took neighbors=0 there); in d < 4 the library's error is one line."""
    torch.manual_seed(0)
    mean = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6)).double()
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    prec = fastgeo.RBFPrecision(
        torch.randn(5, 4, generator=g, dtype=f64), torch.ones(5, dtype=f64), torch.ones(6, 5, dtype=f64), 0.1
    )
    gen = fastgeo.save_generator(tmp_path / "gen4.safetensors", fastgeo.ExpectedMetric(mean, prec))
    Z = np.random.default_rng(0).normal(size=(5, 4))
    np.save(tmp_path / "Z4.npy", Z)
    code, err = run_cli(capsys, gen, tmp_path / "Z4.npy", "-o", tmp_path / "D.npy", "--mode", "graph",
                        "--neighbors", "0", "--error-sample", "0")  # fmt: skip
    assert code == 0, err
    metric = fastgeo.load_generator(gen)
    D = fastgeo.pairwise_distances(metric, torch.from_numpy(Z), mode="graph", neighbors=0, error_sample=0)
    assert np.array_equal(np.load(tmp_path / "D.npy"), D.numpy())


@pytest.mark.parametrize("mode", [None, "exact"])
@pytest.mark.parametrize(
    "option,value",
    [("--neighbors", "2"), ("--error-sample", "3"), ("--straight", None), ("--edges", "exact")],
)
def test_graph_options_are_refused_in_exact_mode(files, capsys, monkeypatch, tmp_path, mode, option, value):
    """--neighbors, --error-sample, --straight and --edges given in exact mode (the default) would be
    ignored: refused, naming the option and the mode that uses it."""
    tmp, gen = files
    solving_forbidden(monkeypatch)
    exact = [] if mode is None else ["--mode", mode]
    given = [option] if value is None else [option, value]
    expect_error(capsys, [option, "--mode graph", "no effect in --mode exact"], gen, tmp / "Z.npy", "-o",
                 tmp_path / "D.npy", *exact, *given)  # fmt: skip


def test_checkpoint_is_refused_in_graph_mode(files, capsys, monkeypatch, tmp_path):
    """--checkpoint with --mode graph: refused before any work, naming the option."""
    tmp, gen = files
    solving_forbidden(monkeypatch)
    words = ["--checkpoint", "--mode exact", "no effect in --mode graph"]
    expect_error(capsys, words, gen, tmp / "Z.npy", "-o", tmp_path / "D.npy", "--mode", "graph",
                 "--checkpoint", tmp_path / "ckpt")  # fmt: skip


def test_chain_check_from_the_command_line(files, capsys, tmp_path):
    """Exact mode checks the matrix against chains through a third code and says so in the
    printed report; --no-chains skips it (the same matrix where no chain beats an entry)."""
    tmp, gen = files
    args = [gen, tmp / "Z.npy", "--max-iter", "60"]
    code, err = run_cli(capsys, *args, "-o", tmp_path / "D.npy")
    assert code == 0 and "chains: 0 entries beaten" in err[-1], err
    code, err = run_cli(capsys, *args, "-o", tmp_path / "D2.npy", "--no-chains")
    assert code == 0 and "chains:" not in err[-1], err
    assert np.array_equal(np.load(tmp_path / "D.npy"), np.load(tmp_path / "D2.npy"))


def test_a_closed_pipe_ends_quietly(capsys, monkeypatch):
    """``fastgeo demo | head -1``: the reader leaves, the next write raises BrokenPipeError; the
    command ends with status 141 (SIGPIPE's) and no message (it printed "fastgeo: error: [Errno 32]
    Broken pipe" and returned 2)."""
    import fastgeo.cli as cli

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_info", closed)
    monkeypatch.setattr(cli, "_stdout_closed", lambda: True)  # stdout's reader left
    assert main(["info"]) == 141
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "_stdout_closed", lambda: False)  # another pipe (a worker's): an error
    assert main(["info"]) == 2
    assert "fastgeo: error:" in capsys.readouterr().err


def test_warnings_are_one_line(capsys, monkeypatch):
    """A fastgeo warning on the command line is one line, not fastgeo's file and source line
    (``--trust`` showed fastgeo/cli/inputs.py and its code); others' as they were; put back after."""
    import warnings

    import fastgeo.cli as cli

    shown = warnings.formatwarning

    own = str(Path(fastgeo.__file__).parent / "rbf_fit.py")

    def command(args):  # what a warning raised during the command looks like
        for text in ("fastgeo: loading 'g.pt2' as trusted code", "std(): degrees of freedom <= 0"):
            print(warnings.formatwarning(text, UserWarning, "x.py", 9), end="")
        print(warnings.formatwarning("RBFPrecision.fit: slow", UserWarning, own, 177), end="")
        return 0

    monkeypatch.setattr(cli, "_info", command)
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "UserWarning: fastgeo: loading 'g.pt2' as trusted code"
    assert lines[1] == "x.py:9: UserWarning: std(): degrees of freedom <= 0"  # another library's: as it was
    assert lines[-1] == "UserWarning: fastgeo: RBFPrecision.fit: slow"  # raised in fastgeo's files
    assert warnings.formatwarning is shown


@pytest.mark.parametrize("seed", ["-1", str(1 << 64)])
@pytest.mark.parametrize("entry", ["fastgeo demo", "python -m fastgeo.demo"])
def test_demo_seed_out_of_range_is_one_line_and_no_folder(capsys, tmp_path, entry, seed):
    from fastgeo.demo.__main__ import main as module_main

    out = tmp_path / "demo"
    argv = ["--seed", seed, "--out", str(out), "--quick", "--no-progress"]
    code = main(["demo", *argv]) if entry == "fastgeo demo" else module_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fastgeo: error: "), err
    assert "seed" in err[0], err
    assert not out.exists()


def test_codes_beyond_a_float32_generators_range_are_named(capsys, tmp_path, monkeypatch):
    """float64 codes that overflow the generator's float32 were reported as "Z contains NaN or
    inf" (the API's name, not the file's)."""
    solving_forbidden(monkeypatch)
    gen = Path(__file__).parent / "data" / "digits.safetensors"
    big = tmp_path / "big.npy"
    np.save(big, np.array([[0.0, 1e300], [0.5, 0.5]]))
    expect_error(capsys, ["latents", "beyond the range", "float32"], gen, big, "-o", tmp_path / "D.npy")
