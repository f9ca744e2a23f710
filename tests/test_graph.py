"""The graph task: GraphLand's published files (written here in their format, since nothing can
be downloaded), the feature processing, the mean-aggregation GNN, GraphLand's metrics, and a run
end to end."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tasks.graph import GraphTask, data
from tasks.graph.models import NeighbourAttention, mean_adjacency
from tasks.graph.task import average_precision
from tests.conftest import ROOT


@pytest.fixture
def graphland_folder(tmp_path):
    """A 40-node binary-classification dataset in GraphLand's layout: numerical (with NaNs),
    fraction and categorical features, a NaN target, three split files, an edge list."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 40
    folder = tmp_path / "tolokers-2"
    folder.mkdir()
    info = {"task": "binary_classification", "target_name": "banned",
            "numerical_features_names": ["tasks", "approved", "share"],
            "fraction_features_names": ["share"], "categorical_features_names": ["edu", "eng"],
            "graph_is_directed": False}
    (folder / "info.yaml").write_text(yaml.safe_dump(info))
    tasks = rng.integers(0, 50, n).astype(float)
    tasks[3] = np.nan
    pd.DataFrame({"tasks": tasks, "approved": rng.normal(size=n), "share": rng.random(n),
                  "edu": rng.integers(0, 4, n), "eng": rng.integers(0, 2, n)},
                 index=pd.RangeIndex(n, name="node_id")).to_csv(folder / "features.csv")
    target = rng.integers(0, 2, n).astype(float)
    target[7] = np.nan
    pd.DataFrame({"banned": target}, index=pd.RangeIndex(n, name="node_id")).to_csv(
        folder / "targets.csv")
    for split in data.SPLITS:
        part = rng.random(n)
        pd.DataFrame({"train": part < 0.5, "val": (part >= 0.5) & (part < 0.75),
                      "test": part >= 0.75}, index=pd.RangeIndex(n, name="node_id")).to_csv(
            folder / f"split_masks_{split}.csv")
    edges = rng.integers(0, n, (120, 2))
    pd.DataFrame(edges, columns=["source", "target"]).to_csv(folder / "edgelist.csv",
                                                             index=False)
    return folder


def test_prepare_reads_graphlands_files_and_processes_features(graphland_folder, tmp_path):
    meta = data.prepare_graphland(graphland_folder, tmp_path / "out", "RH")
    assert meta["nodes"] == 40 and meta["edges"] == 120 and meta["classes"] == 2
    # 2 numerical (quantile-normal) + 1 fraction + one-hot edu (4) + binary eng (1)
    assert meta["features"] == 8
    arrays = data.load(tmp_path / "out", "RH")
    assert not np.isnan(arrays["x"]).any()
    assert abs(arrays["x"][:, 1].mean()) < 0.2  # quantile-normal: centred
    assert ((arrays["x"][:, 2] >= 0) & (arrays["x"][:, 2] <= 1)).all()  # fraction kept
    assert arrays["y"][7] == -1 and not any(arrays[f"{k}_mask"][7] for k in ("train", "val",
                                                                               "test"))
    with pytest.raises(FileNotFoundError, match="split_masks_TH.csv"):
        (graphland_folder / "split_masks_TH.csv").unlink()
        data.prepare_graphland(graphland_folder, tmp_path / "out2", "TH")


@pytest.mark.slow
def test_prepare_data_cli_names_the_bad_dataset(graphland_folder, tmp_path):
    script = str(ROOT / "scripts" / "prepare_data.py")
    ok = subprocess.run([sys.executable, script, "graphland", "tolokers-2", "--source",
                         str(graphland_folder), "--data-root", str(tmp_path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "prepared graphland tolokers-2 (RL): 40 nodes, 120 edges" in ok.stdout
    bad = subprocess.run([sys.executable, script, "graphland", "cora", "--source",
                          str(graphland_folder)], capture_output=True, text=True)
    assert bad.returncode == 2 and "one of ['hm-categories'" in bad.stderr


def test_quantile_normal_is_the_empirical_cdf_through_the_normal_quantile():
    x = np.array([[3.0], [1.0], [2.0], [2.0]])
    out = data.quantile_normal(x)[:, 0]
    assert out[1] < out[2] == out[3] < out[0] and abs(out[2]) < 1e-9  # ties share a rank


def test_mean_adjacency_averages_neighbours():
    edges = torch.tensor([[0, 1], [0, 2]])
    adj = mean_adjacency(edges, 4, undirected=True)
    h = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    out = torch.sparse.mm(adj, h)[:, 0]
    assert out.tolist() == [3.0, 1.0, 1.0, 0.0]  # node 3 has no neighbours


def test_average_precision_matches_its_definition():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 0, 1, 0])
    assert average_precision(scores, labels) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_a_graph_run_on_prepared_graphland_files(graphland_folder, tmp_path):
    from hydra import compose, initialize_config_dir

    from tasks.train.runner import run

    data.prepare_graphland(graphland_folder, tmp_path / "data" / "graphland" / "tolokers-2",
                           "RL")
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=[
            "task=graphland", "task.dataset=tolokers-2", "task.width=16", "task.layers=1",
            "optim=muon", "steps=6", "eval_every=3", f"runs_root={tmp_path / 'runs'}",
            f"data_root={tmp_path / 'data'}", "progress=false"])
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert 0.0 <= summary["final"]["test_average_precision"] <= 1.0
    task = GraphTask(dataset="synthetic", data_root="x", seed=0, device=torch.device("cpu"),
                     synthetic={"nodes": 50, "classes": 3, "features": 4, "degree": 2},
                     width=8, layers=1)
    assert task.train_batch(0, 0) is None and task.loss(task.model, None).ndim == 0


def test_neighbour_attention_is_masked_softmax_attention():
    """model=gt: each node attends over its neighbours only (softmax over them), per head; a
    node without neighbours gets zero. Reference: dense attention with a -inf mask."""
    torch.manual_seed(0)
    edges = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 3]])
    adj = mean_adjacency(edges, 5)  # node 4 has no neighbours
    attention = NeighbourAttention(8, heads=2)
    h = torch.randn(5, 8)
    got = attention(h, adj)
    x = attention.norm(h)
    q, k, v = (f(x).view(5, 2, 4).transpose(0, 1) for f in
               (attention.q, attention.k, attention.v))
    mask = adj.to_dense() > 0
    scores = (q @ k.transpose(1, 2) / 2.0).masked_fill(~mask, -torch.inf)
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    want = (weights @ v).transpose(0, 1).reshape(5, 8)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(got[4], torch.zeros(8))


def test_the_graph_transformer_trains_full_batch():
    task = GraphTask(dataset="synthetic", data_root="unused", seed=0, device=torch.device("cpu"),
                     synthetic={"nodes": 300, "classes": 4, "features": 8, "degree": 4},
                     width=16, layers=2, model="gt", heads=4)
    assert sum(isinstance(m, NeighbourAttention) for m in task.model.modules()) == 2
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        loss = task.loss(task.model, task.train_batch(0, 0))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
