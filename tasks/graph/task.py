"""Node classification on a GraphLand dataset (or a generated graph) with a residual GNN or a
graph transformer (`model: gnn | gt`, tasks/graph/models.py),
trained full-batch: every optimizer step is one pass over the whole graph, the loss taken on
the train nodes. Evaluation scores the val and test nodes with GraphLand's metric for the task
type: accuracy (multiclass) or average precision (binary), reported under its own name and as
`val_metric` / `test_metric`, so that one table can rank optimizers across datasets.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tasks.graph import data
from tasks.graph.models import GNN, MODELS, mean_adjacency
from tasks.train import checks
from tasks.train.base import Cost, DataNeed, Target, Task, evals_in_run, generated
from tasks.train.cost import training_memory


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of the precision at each positive, ranking by score (ties broken by order)."""
    order = scores.argsort(descending=True)
    hits = labels[order].float()
    if hits.sum() == 0:
        return 0.0
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, device=hits.device)
    return float((precision * hits).sum() / hits.sum())


class GraphTask(Task):
    checkpoint_trainable_only = False

    def __init__(self, *, dataset: str, data_root: str, seed: int, device: torch.device,
                 grad_accum: int = 1, split: str = "RL", width: int = 256, layers: int = 3,
                 dropout: float = 0.2, undirected: bool = True, synthetic: dict | None = None,
                 target_metric: float | None = None, model: str = "gnn", heads: int = 4,
                 name: str = "graph"):
        if grad_accum != 1:
            raise ValueError(f"grad_accum must be 1 for full-batch graph training, got "
                             f"{grad_accum}")
        self.name, self.seed, self.device = name, seed, device
        if dataset == "synthetic":
            arrays, kind = data.synthetic(**synthetic, seed=0), "multiclass"
        else:
            arrays = data.load(Path(data_root).expanduser() / "graphland" / dataset, split)
            kind = data.DATASETS[dataset]["task"]
        self.kind = kind
        self.x = torch.from_numpy(arrays["x"]).to(device)
        self.y = torch.from_numpy(arrays["y"]).to(device)
        self.masks = {k: torch.from_numpy(arrays[f"{k}_mask"]).to(device)
                      for k in ("train", "val", "test")}
        edges = torch.from_numpy(arrays["edges"])
        self.adj = mean_adjacency(edges, len(self.x), undirected).to(device)
        classes = int(self.y.max()) + 1
        self.info = {"dataset": dataset, "split": split, "task": kind, "nodes": len(self.x),
                     "edges": int(len(edges)), "features": int(self.x.shape[1]),
                     "classes": classes,
                     **{f"{k}_nodes": int(m.sum()) for k, m in self.masks.items()}}
        torch.manual_seed(seed)
        self.model = GNN(self.x.shape[1], classes, width, layers, dropout, model,
                         heads).to(device)
        self.tokens_per_batch = int(self.masks["train"].sum())  # labelled nodes a step
        self.metric = "accuracy" if kind == "multiclass" else "average_precision"
        self.target = Target("val_metric", target_metric, "max")

    @classmethod
    def validate_config(cls, task: dict) -> None:
        checks.one_of(task, "dataset", [*data.DATASETS, "synthetic"])
        checks.one_of(task, "split", list(data.SPLITS))
        for key in ("width", "layers", "heads"):
            checks.integer(task, key)
        checks.number(task, "dropout", 0.0, 1.0)
        checks.one_of(task, "model", list(MODELS))
        if task["model"] == "gt" and task["width"] % task["heads"]:
            raise ValueError(f"task.width ({task['width']}) must be a multiple of task.heads "
                             f"({task['heads']}) for model=gt")

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        """The prepared GraphLand dataset (the synthetic graph is generated in the run)."""
        task = cfg["task"]
        if task["dataset"] == "synthetic":
            return (generated("synthetic graph"),)
        folder = Path(cfg["data_root"]).expanduser().absolute() / "graphland" / task["dataset"]
        return (DataNeed(f"graphland {task['dataset']}", str(folder),
                         (folder / f"graph_{task['split']}.npz").exists(),
                         f"python scripts/prepare_data.py graphland {task['dataset']} "
                         f"--source <the dataset's unzipped folder> --split {task['split']}"),)

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        task = cfg["task"]
        synthetic = task["dataset"] == "synthetic"
        nodes = task["synthetic"]["nodes"] if synthetic else data.DATASETS[task["dataset"]][
            "nodes"]
        width, layers = task["width"], task["layers"]
        attention = 3 * width * width if task.get("model", "gnn") == "gt" else 0
        params = layers * (2 * width * width + width * width + attention)
        per_node = 6 * params  # forward + backward of the dense layers; sparse sums are small
        evals = evals_in_run(cfg["steps"], cfg["eval_every"])
        return Cost(params=params, trained_params=params,
                    train_flops=per_node * nodes * cfg["steps"],
                    eval_flops=per_node / 3 * nodes * evals,
                    memory_bytes=training_memory(params, params, 4 * nodes * width * layers * 6),
                    data=cls.data_needs(cfg), compute="fp32",
                    basis=f"dense layers only: {per_node:.3g} FLOP per node per step "
                          f"(full batch, {nodes:,} nodes)" + (
                              "; model=gt's per-edge attention (about 4·width floats an edge "
                              "a block) is not counted: the edge count is read at run time"
                              if attention else ""))

    def train_batch(self, step: int, micro: int):
        return None  # full batch: the whole graph every step

    def loss(self, model, batch):
        logits = model(self.x, self.adj).float()
        train = self.masks["train"]
        return F.cross_entropy(logits[train], self.y[train])

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        logits = model(self.x, self.adj).float()
        out = {}
        for split in ("val", "test"):
            mask = self.masks[split]
            out[f"{split}_loss"] = float(F.cross_entropy(logits[mask], self.y[mask]))
            if self.kind == "multiclass":
                value = float((logits[mask].argmax(1) == self.y[mask]).float().mean())
            else:
                value = average_precision(logits[mask, 1] - logits[mask, 0], self.y[mask])
            out[f"{split}_{self.metric}"] = value
            out[f"{split}_metric"] = value  # the same number under one name for every dataset
        return out

    def describe(self) -> dict:
        return {"params": sum(p.numel() for p in self.model.parameters()), "data": self.info,
                "tokens_per_batch": self.tokens_per_batch}
