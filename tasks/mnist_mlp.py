"""An MLP on MNIST-format images: the SMuon authors' p* study, `experiments/mlp_exact_p.py`
(deel-ai-papers/schatten-muon @749ba8d).

    x (28×28, scaled to [0, 1], then (x − 0.1)/0.1) → fc1 784→1024 → BatchNorm → ReLU
      → fc_mid 1024→1024 → ReLU → fc2 1024→10       (bias-free Linear layers)
    cross-entropy, batches of 4,096 drawn without replacement, the last partial batch dropped

The images are read from the four IDX files MNIST ships (`train-images-idx3-ubyte`, ...,
optionally gzipped) in `<data_root>/<dataset>/`; Fashion-MNIST ships the same files, so either
works (`scripts/prepare_data.py mnist | fashion-mnist`). Batches are a pure function of
(seed, step): epoch e's order is a permutation keyed by (seed, e).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.train import checks
from tasks.train.base import Cost, DataNeed, Target, Task, keyed_generator, score_classifier
from tasks.train.cost import training_memory

DATASETS = ("mnist", "fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_TYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST format: magic 0 0 type ndim, big-endian int32 sizes, data)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values, the header says {tuple(dims)}")
    return data.reshape(tuple(int(d) for d in dims))


def write_idx(path: Path, array: np.ndarray) -> None:
    """The inverse of read_idx (uint8 only), gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def idx_path(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [idx_path(folder, stem) for stem in FILES[split]]
    if None in paths:
        missing = [stem for stem, path in zip(FILES[split], paths) if path is None]
        raise FileNotFoundError(f"{folder}: missing {missing} (IDX files, optionally .gz); "
                                f"prepare with scripts/prepare_data.py")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"{folder} {split}: images {images.shape}, labels {labels.shape}; "
                         f"expected (N, 28, 28) and (N,)")
    return images, labels


def prepare_idx_dataset(dataset: str, out: Path, source: Path | None) -> dict[str, int]:
    """Copy the four IDX files from `source` (checked by reading them), or download them with
    torchvision when no source is given; returns the image count of each split."""
    out.mkdir(parents=True, exist_ok=True)
    if source is None:
        import torchvision

        cls = {"mnist": torchvision.datasets.MNIST,
               "fashion-mnist": torchvision.datasets.FashionMNIST}[dataset]
        for train in (True, False):  # downloads, checks md5 and unzips into <out>/<Class>/raw
            cls(root=str(out), train=train, download=True)
        source = out / cls.__name__ / "raw"
    counts = {}
    for split, stems in FILES.items():
        for stem in stems:
            path = idx_path(source, stem)
            if path is None:
                raise FileNotFoundError(f"{source}: no {stem} (or {stem}.gz)")
            (out / path.name).write_bytes(path.read_bytes())
        counts[split] = len(load_split(out, split)[1])
    return counts


def normalize(images: np.ndarray) -> torch.Tensor:
    """ToTensor then Normalize((0.1,), (0.1,)), as the script."""
    return (torch.from_numpy(images.astype(np.float32) / 255.0) - 0.1) / 0.1


class ReLUBatchNormMLP(nn.Module):
    def __init__(self, in_features: int = 784, hidden: int = 1024, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc_mid = nn.Linear(hidden, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), -1)
        x = F.relu(self.bn1(self.fc1(x)))
        return self.fc2(F.relu(self.fc_mid(x)))

    def param_roles(self) -> dict[str, str]:
        # the script gives every ≥2-D parameter to SMuon (first and last layer included)
        return {n: "matrix" if p.ndim >= 2 else "norm_or_bias"
                for n, p in self.named_parameters()}


class MnistMLPTask(Task):
    checkpoint_trainable_only = False

    def __init__(self, *, seed: int, device: torch.device, data_root: str,
                 dataset: str = "mnist", hidden: int = 1024, batch_size: int = 4096,
                 eval_batch_size: int = 5000, name: str = "mnist_mlp", grad_accum: int = 1):
        self.name, self.seed, self.device, self.grad_accum = name, seed, device, grad_accum
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        folder = Path(data_root) / dataset
        train_x, train_y = load_split(folder, "train")
        test_x, test_y = load_split(folder, "test")
        self.train_x, self.train_y = normalize(train_x), torch.from_numpy(train_y.astype(np.int64))
        self.test_x, self.test_y = normalize(test_x), torch.from_numpy(test_y.astype(np.int64))
        if len(self.train_x) < batch_size:
            raise ValueError(f"task.batch_size ({batch_size}) exceeds the {len(self.train_x)} "
                             f"training images of {folder}")
        self.batches_per_epoch = len(self.train_x) // batch_size  # drop_last, as the script
        self.fingerprint = hashlib.sha1(train_x.tobytes()[:1 << 20]).hexdigest()[:12]
        init = keyed_generator(seed, "init")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=init)))
            self.model = ReLUBatchNormMLP(28 * 28, hidden, 10)
        self.model.to(device)
        self.tokens_per_batch = batch_size
        self.target = Target("test_acc", None, "max")

    @classmethod
    def validate_config(cls, task: dict) -> None:
        if task.get("dataset") not in DATASETS:
            raise ValueError(f"task.dataset must be one of {list(DATASETS)}, got "
                             f"{task.get('dataset')!r}")
        for key in ("hidden", "batch_size", "eval_batch_size"):
            checks.integer(task, key)

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        dataset = cfg["task"]["dataset"]
        folder = Path(cfg["data_root"]) / dataset
        ready = all(idx_path(folder, stem) is not None
                    for split in FILES.values() for stem in split)
        source = " --source /usr/share/datasets/fashion-mnist (apt install " \
                 "dataset-fashion-mnist)" if dataset == "fashion-mnist" else ""
        return (DataNeed(dataset, str(folder), ready,
                         f"python scripts/prepare_data.py {dataset}{source}"),)

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        t = cfg["task"]
        h, b = t["hidden"], t["batch_size"]
        weights = 784 * h + h * h + h * 10
        params = weights + 2 * h
        return Cost(params=params, trained_params=params,
                    train_flops=6.0 * b * weights * cfg["steps"] * cfg["grad_accum"],
                    eval_flops=2.0 * 10_000 * weights * (cfg["steps"] // cfg["eval_every"] + 1),
                    memory_bytes=training_memory(params, params, 4.0 * b * (784 + 4 * h)),
                    data=cls.data_needs(cfg), compute="fp32",
                    basis="6·batch·weights FLOPs a step; eval on the 10,000 test images")

    def train_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = step * self.grad_accum + micro
        epoch, position = divmod(index, self.batches_per_epoch)
        order = torch.randperm(len(self.train_x), generator=keyed_generator(
            self.seed, "epoch", epoch))
        rows = order[position * self.batch_size:(position + 1) * self.batch_size]
        return self.train_x[rows].to(self.device), self.train_y[rows].to(self.device)

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        batches = ((self.test_x[i:i + self.eval_batch_size].to(self.device),
                    self.test_y[i:i + self.eval_batch_size].to(self.device))
                   for i in self.eval_shard.take(range(0, len(self.test_x),
                                                       self.eval_batch_size)))
        loss, acc = score_classifier(model, batches, self.eval_shard)
        return {"test_loss": loss, "test_acc": acc}

    def describe(self) -> dict:
        return {"params": sum(p.numel() for p in self.model.parameters()),
                "data": {"train_images": len(self.train_x), "test_images": len(self.test_x),
                         "fingerprint": self.fingerprint}}
