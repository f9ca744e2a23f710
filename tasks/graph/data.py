"""GraphLand node-property datasets (Bazhenov et al., arXiv:2409.14500), read from their
published files and prepared once into one `.npz` a training job loads in a second.

A published dataset folder holds `info.yaml` (task, target and the names of the numerical,
fraction and categorical feature columns), `features.csv` and `targets.csv` (indexed by node),
`edgelist.csv` (two node columns) and `split_masks_<RL|RH|TH>.csv` (train / val / test booleans
per node). Preparing applies the benchmark's default feature processing, fitted on the whole
graph as its transductive setting does:
- numerical features: NaNs imputed with the column's most frequent value, then a
  quantile-to-normal transform (rank → standard normal quantile: the benchmark's
  `quantile_transform_normal`, written here in numpy rather than taken from scikit-learn);
- fraction features: NaNs imputed the same way, kept in [0, 1];
- categorical features: one-hot (a binary column kept as one 0/1 column);
- nodes with a NaN target leave every split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# The classification datasets (node counts from the benchmark's description); `metric` is what
# GraphLand reports for each task type: accuracy (multiclass), average precision (binary).
DATASETS = {
    "hm-categories": {"task": "multiclass", "nodes": 46_563},
    "pokec-regions": {"task": "multiclass", "nodes": 1_632_803},
    "web-topics": {"task": "multiclass", "nodes": 2_890_331},
    "tolokers-2": {"task": "binary", "nodes": 11_758},
    "city-reviews": {"task": "binary", "nodes": 148_801},
    "artnet-exp": {"task": "binary", "nodes": 50_405},
    "web-fraud": {"task": "binary", "nodes": 2_890_331},
}
SPLITS = ("RL", "RH", "TH")  # random low (10/10/80), random high (50/25/25), temporal high


def _most_frequent(column: np.ndarray) -> float:
    finite = column[~np.isnan(column)]
    if not len(finite):
        return 0.0
    values, counts = np.unique(finite, return_counts=True)
    return float(values[counts.argmax()])


def impute(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64, copy=True)
    for j in range(x.shape[1]):
        nan = np.isnan(x[:, j])
        if nan.any():
            x[nan, j] = _most_frequent(x[:, j])
    return x


def quantile_normal(x: np.ndarray) -> np.ndarray:
    """Each column mapped through its empirical CDF to a standard normal (ties share their
    mean rank; the extremes are kept off ±inf)."""
    from statistics import NormalDist

    out = np.empty_like(x, dtype=np.float64)
    n = len(x)
    inv = np.vectorize(NormalDist().inv_cdf)
    for j in range(x.shape[1]):
        values, inverse, counts = np.unique(x[:, j], return_inverse=True, return_counts=True)
        mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank per value
        out[:, j] = inv(np.clip((mean_rank[inverse] - 0.5) / n, 1e-7, 1 - 1e-7))
    return out


def one_hot(x: np.ndarray) -> np.ndarray:
    columns = []
    for j in range(x.shape[1]):
        values, inverse = np.unique(x[:, j], return_inverse=True)
        if len(values) == 2:  # binary: one 0/1 column
            columns.append(inverse[:, None].astype(np.float64))
        else:
            columns.append(np.eye(len(values))[inverse])
    return np.concatenate(columns, 1) if columns else np.zeros((len(x), 0))


def prepare_graphland(src: Path, dst: Path, split: str = "RL") -> dict:
    """Read one published GraphLand folder and write `<dst>/graph_<split>.npz` + meta.json."""
    import pandas as pd
    import yaml

    src, dst = Path(src), Path(dst)
    missing = [f for f in ("info.yaml", "features.csv", "targets.csv", "edgelist.csv",
                           f"split_masks_{split}.csv") if not (src / f).exists()]
    if missing:
        raise FileNotFoundError(f"{src} lacks {missing}: expected a GraphLand dataset folder "
                                f"(info.yaml, features.csv, targets.csv, edgelist.csv, "
                                f"split_masks_{split}.csv)")
    info = yaml.safe_load((src / "info.yaml").read_text())
    features = pd.read_csv(src / "features.csv", index_col=0)
    fraction = list(info.get("fraction_features_names") or [])
    numerical = [c for c in info.get("numerical_features_names") or [] if c not in fraction]
    categorical = list(info.get("categorical_features_names") or [])
    parts = []
    if numerical:
        parts.append(quantile_normal(impute(features[numerical].to_numpy(np.float64))))
    if fraction:
        parts.append(impute(features[fraction].to_numpy(np.float64)))
    if categorical:
        parts.append(one_hot(features[categorical].to_numpy()))
    x = np.concatenate(parts, 1).astype(np.float32)
    target = pd.read_csv(src / "targets.csv", index_col=0)[info["target_name"]].to_numpy(
        np.float64)
    labeled = ~np.isnan(target)
    masks = pd.read_csv(src / f"split_masks_{split}.csv", index_col=0)
    edges = pd.read_csv(src / "edgelist.csv").to_numpy(np.int64)[:, :2]
    n = len(x)
    if len(target) != n or len(masks) != n or (len(edges) and edges.max() >= n):
        raise ValueError(f"{src}: {n} feature rows, {len(target)} targets, {len(masks)} mask "
                         f"rows and node ids up to {edges.max() if len(edges) else -1}: they "
                         f"must describe the same nodes")
    y = np.where(labeled, target, -1).astype(np.int64)
    dst.mkdir(parents=True, exist_ok=True)
    arrays = {"x": x, "y": y, "edges": edges,
              **{f"{k}_mask": masks[k].to_numpy(bool) & labeled for k in ("train", "val",
                                                                            "test")}}
    np.savez(dst / f"graph_{split}.npz", **arrays)
    classes = int(y.max()) + 1
    meta = {"name": src.name, "task": info.get("task"), "split": split, "nodes": n,
            "edges": int(len(edges)), "features": int(x.shape[1]), "classes": classes,
            "directed": bool(info.get("graph_is_directed", info.get("is_directed", False))),
            **{f"{k}_nodes": int(arrays[f"{k}_mask"].sum()) for k in ("train", "val", "test")}}
    (dst / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load(folder: Path, split: str) -> dict:
    path = Path(folder) / f"graph_{split}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python scripts/prepare_data.py "
                                f"graphland {Path(folder).name} --source DIR --split {split}`")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def synthetic(nodes: int, classes: int, features: int, degree: int, seed: int = 0) -> dict:
    """A generated homophilous graph in the prepared format: nodes of a class link mostly to
    each other and carry noisy class-dependent features, so neighbours help (a GNN beats an
    MLP) and a small model stays well below 100%."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, nodes)
    centers = rng.normal(0, 1, (classes, features))
    x = (0.25 * centers[y] + rng.normal(0, 1, (nodes, features))).astype(np.float32)
    src = np.repeat(np.arange(nodes), degree)
    same = rng.random(len(src)) < 0.5
    by_class = [np.flatnonzero(y == c) for c in range(classes)]
    dst = np.where(same, [rng.choice(by_class[y[s]]) for s in src],
                   rng.integers(0, nodes, len(src)))
    split = rng.random(nodes)
    return {"x": x, "y": y.astype(np.int64), "edges": np.stack([src, dst], 1),
            "train_mask": split < 0.5, "val_mask": (split >= 0.5) & (split < 0.75),
            "test_mask": split >= 0.75}
