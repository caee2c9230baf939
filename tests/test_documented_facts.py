"""What the docstrings and the command line's help state, held to what the code does: defaults
quoted as numbers (``help()`` shows no constant's value), shapes of returned tensors, the
checks a documented method makes."""

import argparse
import inspect

import pytest
import torch

import fastgeo
from fastgeo.cli import distances as cli_distances
from fastgeo.pairwise import code_graph, driver
from fastgeo.solver import graph as graph_module


def small_metric(d=3, D=20, K=6, dtype=torch.float32):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)).eval()
    g = torch.Generator().manual_seed(1)
    precision = fastgeo.RBFPrecision(
        torch.randn(K, d, generator=g), torch.ones(K), torch.rand(D, K, generator=g), 0.1
    )
    return fastgeo.ExpectedMetric(net.to(dtype), precision.to(dtype))


def test_the_latent_graphs_docstring_quotes_its_defaults():
    doc = inspect.getdoc(fastgeo.LatentGraph)
    assert f"default {graph_module.NEIGHBOURS}; {graph_module.GRID_NEIGHBOURS} in d <= 3" in doc
    assert f"default {graph_module.EDGE_POINTS} in d <= 3, {graph_module.EDGE_POINTS_HIGH_D}" in doc
    assert f"default {graph_module.GRID_NODES}; 0 for none" in doc
    n_nodes = inspect.signature(fastgeo.LatentGraph).parameters["n_nodes"].default
    assert f"(default {n_nodes};" in doc


def test_a_latent_graph_has_the_nodes_its_docstring_counts():
    metric = small_metric()
    graph = fastgeo.LatentGraph(metric, n_nodes=50, grid=0)
    K = metric.precision.centers.shape[0]
    assert graph.nodes.shape == (K * -(-50 // K) + K, 3)


def test_sigma_and_its_transposed_jacobian_have_the_documented_shapes():
    metric = small_metric()
    z = torch.randn(5, 3)
    sigma, jac_t = metric.precision.sigma_and_jacobian_t(z)
    assert (tuple(sigma.shape), tuple(jac_t.shape)) == ((5, 20), (5, 3, 20))
    assert "(P, D), (P, d, D)" in inspect.getdoc(fastgeo.RBFPrecision.sigma_and_jacobian_t)


def test_the_embeddings_jacobian_checks_its_points_like_the_other_methods():
    """It took float32 codes on a float64 metric, and answered a wrong d with a bare RuntimeError
    of a matrix product."""
    metric = small_metric(dtype=torch.float64)
    with pytest.raises(TypeError, match="z has dtype torch.float32 but the metric is torch.float64"):
        metric.mean_embedding_jacobian_rows(torch.randn(4, 3))
    with pytest.raises(ValueError, match="z must have latent dimension d = 3"):
        metric.mean_embedding_jacobian_rows(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="z must have 2 dimensions"):
        metric.mean_embedding_jacobian_rows(torch.randn(2, 4, 3, dtype=torch.float64))
    values, rows = metric.mean_embedding_jacobian_rows(torch.randn(4, 3, dtype=torch.float64))
    assert values.shape[0] == 4 and tuple(rows.shape[:2]) == (3, 4)


def test_a_basis_size_follows_fewer_points_as_documented():
    metric = small_metric()
    z0, z1 = torch.zeros(1, 3), torch.ones(1, 3)
    res = fastgeo.geodesics(metric, z0, z1, n_points=20, graph=False, progress=False)
    assert res.options["basis"] == "BSplineBasis(m=5)"  # 20 // 4
    assert "at most ``n_points // 4``" in inspect.getdoc(fastgeo.geodesics)


def _distances_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser()
    cli_distances.add_parser(top.add_subparsers())
    return top._subparsers._group_actions[0].choices["distances"]


def test_the_distances_commands_help_quotes_the_librarys_defaults():
    parser = _distances_parser()
    assert parser.description  # the other subcommands have one too
    helps = {a.dest: a.help for a in parser._actions}
    assert f"default {code_graph.NEIGHBORS}" in helps["neighbors"]
    assert f"default {driver.ERROR_SAMPLE}" in helps["error_sample"]
    assert "(M, P) with --y" in helps["output"]
    assert "default 300" in helps["max_iter"]


def test_bspline_bases_the_default_results_carry_are_public():
    metric = small_metric()
    res = fastgeo.geodesics(metric, torch.zeros(1, 3), torch.ones(1, 3), graph=False, progress=False)
    assert isinstance(res.curves.basis, fastgeo.BSplineBasis)
    assert set(fastgeo.datasets.__all__) == {"two_moons", "cells"}
