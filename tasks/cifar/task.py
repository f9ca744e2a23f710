"""Image classification on CIFAR-10/100 (balanced or long-tailed) with CIFAR ResNets.

The whole training set lives on the device as one uint8 tensor; each micro-batch is gathered
from an epoch permutation, augmented as a batch on the device, normalized and (on GPU) made
channels_last. Every random choice is a function of (seed, epoch) or (seed, step, micro), so a
resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.cifar import data
from tasks.cifar.models import ARCHS, build_model
from tasks.train import checks
from tasks.train.base import (
    Cost,
    DataNeed,
    Target,
    Task,
    generated,
    keyed_generator,
    score_classifier,
)
from tasks.train.cost import image_classifier_cost


@lru_cache(maxsize=None)
def _synthetic_train_images(n_train: int, n_test: int, k: float, classes: int = 10) -> int:
    """Training images of the synthetic set at imbalance k: its labels are generated, so a
    sweep over k (and the runner's check) draws them once per size, not once per run."""
    _, y, _, _, classes = data.synthetic(classes, n_train, n_test, seed=0)
    return len(y) if k == 1.0 else len(data.long_tail_indices(y, classes, k, seed=0))


class CifarTask(Task):
    checkpoint_trainable_only = False  # the whole model trains

    def __init__(self, *, dataset: str, arch: str, batch_size: int, data_root: str, seed: int,
                 device: torch.device, grad_accum: int = 1, width: float = 1.0,
                 imbalance: float = 1.0, crop_pad: int = 4, flip: bool = True, cutout: int = 0,
                 label_smoothing: float = 0.0, eval_batch_size: int = 1000,
                 target_accuracy: float | None = None, synthetic_size: tuple = (5000, 1000),
                 synthetic_classes: int = 10, name: str = "cifar"):
        if batch_size <= 0:
            raise ValueError(f"task.batch_size must be > 0, got {batch_size}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.name, self.seed, self.device = name, seed, device
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.crop_pad, self.flip, self.cutout = crop_pad, flip, cutout
        self.label_smoothing, self.eval_batch_size = label_smoothing, eval_batch_size
        if dataset == "synthetic":
            # more classes than CIFAR's 10 make the set harder (a miniature that saturates
            # at 10 can give the claim room: smuon_cifar); set with +task.synthetic_classes
            x, y, tx, ty, classes = data.synthetic(synthetic_classes, *synthetic_size, seed=0)
            stats = "cifar10"
        else:
            x, y, tx, ty, classes = data.load_cifar(data_root, dataset)
            stats = dataset
        if imbalance != 1.0:
            keep = data.long_tail_indices(y, classes, imbalance, seed=0)
            x, y = x[keep], y[keep]
        if len(x) < batch_size:
            raise ValueError(f"task.batch_size {batch_size} exceeds the {len(x)} training images")
        self.info = {"dataset": dataset, "train_images": int(len(x)), "test_images": int(len(tx)),
                     "classes": classes, "imbalance": imbalance,
                     "class_counts": np.bincount(y, minlength=classes).tolist(),
                     "fingerprint": data.fingerprint(x, y)}
        self.train_x = torch.from_numpy(x).to(device)
        self.train_y = torch.from_numpy(y).to(device)
        self.test_x = torch.from_numpy(tx).to(device)
        self.test_y = torch.from_numpy(ty).to(device)
        self.mean = torch.tensor(data.MEAN[stats], device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(data.STD[stats], device=device).view(1, 3, 1, 1) * 255
        self.channels_last = device.type == "cuda"
        torch.manual_seed(seed)  # parameter init depends on the run's seed only
        self.model = build_model(arch, classes, width).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tokens_per_batch = batch_size  # images
        self.target = Target("test_acc", target_accuracy, "max")
        self.epoch_examples = len(x)
        self.batches_per_epoch = len(x) // batch_size  # the last partial batch is dropped
        self._epoch, self._perm = None, None

    @classmethod
    def validate_config(cls, task: dict) -> None:
        """Sizes, names and probabilities, checked before anything is read or built."""
        for key in ("batch_size", "eval_batch_size"):
            checks.integer(task, key)
        checks.one_of(task, "dataset", [*data.LAYOUT, "synthetic"])
        checks.one_of(task, "arch", list(ARCHS))
        checks.number(task, "width", 0.0, float("inf"), low_open=True)
        checks.number(task, "imbalance", 1.0, float("inf"))
        checks.number(task, "label_smoothing", 0.0, 1.0)
        checks.integer(task, "crop_pad", minimum=0)
        checks.integer(task, "cutout", minimum=0)

    @classmethod
    def train_examples(cls, task: dict) -> int:
        """Training images of the configured set (long tail applied), from the dataset's
        definition: CIFAR's 5,000 (CIFAR-10) or 500 (CIFAR-100) images per class, or the
        synthetic set's generated labels."""
        k = float(task.get("imbalance", 1.0))
        if task["dataset"] == "synthetic":
            return _synthetic_train_images(*task.get("synthetic_size", (5000, 1000)), k,
                                           task.get("synthetic_classes", 10))
        classes = data.LAYOUT[task["dataset"]][4]
        per_class = 50_000 // classes
        return per_class * classes if k == 1.0 else sum(data.long_tail_counts(per_class,
                                                                              classes, k))

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        """Compute and memory of the run `cfg` (a resolved run config), traced on meta."""
        task = cfg["task"]
        dataset = task["dataset"]
        synthetic = dataset == "synthetic"
        classes = task.get("synthetic_classes", 10) if synthetic else data.LAYOUT[dataset][4]
        test_images = task.get("synthetic_size", (5000, 1000))[1] if synthetic else 10_000
        return image_classifier_cost(
            cfg, lambda: build_model(task["arch"], classes, task.get("width", 1.0)), 32,
            test_images, cls.data_needs(cfg))

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        """The extracted CIFAR archive (the synthetic set is generated in the run)."""
        dataset = cfg["task"]["dataset"]
        if dataset == "synthetic":
            return (generated("synthetic images"),)
        folder = Path(cfg["data_root"]).expanduser().absolute() / dataset
        ready = all((folder / data.LAYOUT[dataset][0] / f).exists()
                    for f in data.LAYOUT[dataset][1] + data.LAYOUT[dataset][2])
        return (DataNeed(dataset, str(folder), ready,
                         f"python scripts/prepare_data.py {dataset}"),)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = keyed_generator(self.seed, "epoch", epoch)
            self._perm = torch.randperm(len(self.train_y), generator=gen).to(self.device)
            self._epoch = epoch
        return self._perm

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_batch(self, step: int, micro: int):
        index = step * self.grad_accum + micro
        epoch, position = divmod(index, self.batches_per_epoch)
        perm = self._permutation(epoch)
        idx = perm[position * self.batch_size : (position + 1) * self.batch_size]
        x = data.augment(self.train_x[idx], keyed_generator(self.seed, "aug", step, micro),
                         self.crop_pad, self.flip, self.cutout)
        return self._normalize(x), self.train_y[idx]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.label_smoothing)

    def evaluate(self, model) -> dict[str, float]:
        size = self.eval_batch_size
        shard = self.eval_shard
        loss, accuracy = score_classifier(model, (
            (self._normalize(self.test_x[i:i + size]), self.test_y[i:i + size])
            for i in shard.take(range(0, len(self.test_y), size))), shard)
        return {"test_loss": loss, "test_acc": accuracy}

    def describe(self) -> dict:
        return {"params": sum(p.numel() for p in self.model.parameters()), "data": self.info,
                "tokens_per_batch": self.tokens_per_batch}
