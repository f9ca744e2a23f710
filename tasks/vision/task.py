"""Image classification with timm models (ViT, ResNet) on ImageNet, ImageNette or a generated
set, fed from prepared uint8 arrays (tasks/vision/data.py) and augmented on the device.

A step gathers its batch from the epoch's permutation (a pure function of seed and epoch),
moves the uint8 images to the device and there crops, flips and (optionally) RandAugments them
with generators keyed by (seed, step, micro), normalizes with ImageNet's statistics and, on a
GPU, makes them channels_last. Evaluation scores the stored centre crops of the val split.

Train augmentation (`crop`):
- `random_resized`: RandomResizedCrop(image_size, scale=crop_scale) + flip, the standard
  ImageNet recipe;
- `center`: the stored Resize + CenterCrop image (resized to image_size if it differs) + flip,
  the SMuon authors' ImageNette pipeline (which adds RandAugment: `randaugment: {num_ops: 2,
  magnitude: 9}`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
from tasks.vision import augment, data
from tasks.vision.models import build_model

CROPS = ("random_resized", "center")


class ImageTask(Task):
    checkpoint_trainable_only = False  # the whole model trains

    def __init__(self, *, dataset: str, arch: str, batch_size: int, data_root: str, seed: int,
                 device: torch.device, grad_accum: int = 1, image_size: int = 224,
                 model_kwargs: dict | None = None, crop: str = "random_resized",
                 crop_scale: tuple = (0.08, 1.0), flip: bool = True,
                 randaugment: dict | None = None, label_smoothing: float = 0.0,
                 eval_batch_size: int = 250, eval_limit: int | None = None,
                 target_accuracy: float | None = None, synthetic: dict | None = None,
                 name: str = "vision"):
        self.name, self.seed, self.device = name, seed, device
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.image_size, self.crop, self.crop_scale = image_size, crop, tuple(crop_scale)
        self.flip, self.randaugment = flip, dict(randaugment) if randaugment else None
        self.label_smoothing, self.eval_batch_size = label_smoothing, eval_batch_size
        if dataset == "synthetic":
            arrays = data.synthetic(**synthetic, seed=0)
        else:
            arrays = data.load(Path(data_root).expanduser() / dataset)
        self.train_x, self.train_y = arrays["train_x"], arrays["train_y"]
        self.val_x, self.val_y = arrays["val_x"], arrays["val_y"]
        if eval_limit is not None:
            self.val_x, self.val_y = self.val_x[:eval_limit], self.val_y[:eval_limit]
        classes = len(arrays["meta"]["classes"])
        if len(self.train_y) < batch_size:
            raise ValueError(f"task.batch_size {batch_size} exceeds the {len(self.train_y)} "
                             f"training images")
        self.info = {"dataset": dataset, "train_images": int(len(self.train_y)),
                     "val_images": int(len(self.val_y)), "classes": classes,
                     "stored_size": int(self.train_x.shape[1]),
                     "fingerprint": arrays["meta"].get("fingerprint", "generated")}
        self.mean = torch.tensor(data.MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(data.STD, device=device).view(1, 3, 1, 1)
        self.channels_last = device.type == "cuda"
        torch.manual_seed(seed)  # parameter init depends on the run's seed only
        self.model = build_model(arch, classes, image_size, model_kwargs).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tokens_per_batch = batch_size  # images
        self.target = Target("val_acc", target_accuracy, "max")
        self.epoch_examples = len(self.train_y)
        self.batches_per_epoch = len(self.train_y) // batch_size  # the last partial is dropped
        self._epoch, self._perm = None, None

    @classmethod
    def validate_config(cls, task: dict) -> None:
        for key in ("batch_size", "eval_batch_size", "image_size"):
            checks.integer(task, key)
        checks.one_of(task, "dataset", [*data.DATASETS, "synthetic"])
        checks.one_of(task, "crop", list(CROPS))
        checks.number(task, "label_smoothing", 0.0, 1.0)
        scale = task.get("crop_scale", (0.08, 1.0))
        if not (len(scale) == 2 and 0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"task.crop_scale must be [low, high] with 0 < low <= high <= 1, "
                             f"got {list(scale)}")
        if task.get("dataset") == "synthetic" and not task.get("synthetic"):
            raise ValueError("task.synthetic must give {classes, n_train, n_val, size} for "
                             "dataset synthetic")

    @classmethod
    def train_examples(cls, task: dict) -> int:
        """Training images of the configured set, from its published size (or the generated
        set's configured size)."""
        if task["dataset"] == "synthetic":
            return int(task["synthetic"]["n_train"])
        return data.DATASETS[task["dataset"]]["train"]

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        task = cfg["task"]
        dataset, size = task["dataset"], task["image_size"]
        synthetic = dataset == "synthetic"
        classes = task["synthetic"]["classes"] if synthetic else data.DATASETS[dataset]["classes"]
        val_images = (task["synthetic"]["n_val"] if synthetic else
                      data.DATASETS[dataset]["val"])
        if task.get("eval_limit"):
            val_images = min(val_images, task["eval_limit"])
        return image_classifier_cost(
            cfg, lambda: build_model(task["arch"], classes, size, task.get("model_kwargs")),
            size, val_images, cls.data_needs(cfg))

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        """The decoded image arrays (the synthetic set is generated in the run)."""
        dataset = cfg["task"]["dataset"]
        if dataset == "synthetic":
            return (generated("synthetic images"),)
        folder = Path(cfg["data_root"]).expanduser().absolute() / dataset
        return (DataNeed(dataset, str(folder), data.is_prepared(folder),
                         f"python scripts/prepare_data.py {dataset} --source "
                         f"<{data.DATASETS[dataset]['source']}>"),)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            gen = keyed_generator(self.seed, "epoch", epoch)
            self._perm = torch.randperm(len(self.train_y), generator=gen).numpy()
            self._epoch = epoch
        return self._perm

    def _to_device(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = images if isinstance(images, torch.Tensor) else \
            torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda" and not x.is_pinned():
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (n, 3, H, W) uint8

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_batch(self, step: int, micro: int):
        return self.device_batch(self.host_batch(step, micro))

    def host_batch(self, step: int, micro: int):
        """(step, micro, images as a uint8 host tensor, their labels' indices): the memory-map
        read, which the harness may make ahead in a background thread
        (tasks/train/prefetch.py); augmentation happens on the device."""
        index = step * self.grad_accum + micro
        epoch, position = divmod(index, self.batches_per_epoch)
        idx = self._permutation(epoch)[position * self.batch_size:
                                       (position + 1) * self.batch_size]
        order = np.argsort(idx)  # a memory map reads ascending indices fastest
        images = np.empty((len(idx), *self.train_x.shape[1:]), dtype=np.uint8)
        images[order] = self.train_x[idx[order]]
        return step, micro, torch.from_numpy(images), torch.from_numpy(idx)

    def device_batch(self, host):
        step, micro, images, idx = host
        idx = idx.numpy()
        x = self._to_device(images).float()
        gen = keyed_generator(self.seed, "aug", step, micro)
        if self.crop == "random_resized":
            x = augment.random_resized_crop(x, self.image_size, gen, self.crop_scale)
        else:
            x = augment.resize(x, self.image_size)
        if self.flip:
            x = augment.flip(x, gen)
        if self.randaugment:
            x = augment.rand_augment(x.round().clamp(0, 255).to(torch.uint8), gen,
                                     **self.randaugment).float()
        y = torch.from_numpy(self.train_y[idx]).to(self.device)
        return self._normalize(x), y

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.label_smoothing)

    def evaluate(self, model) -> dict[str, float]:
        size = self.eval_batch_size

        def batches():
            for i in self.eval_shard.take(range(0, len(self.val_y), size)):
                x = augment.resize(self._to_device(self.val_x[i:i + size]).float(),
                                   self.image_size)
                yield self._normalize(x), torch.from_numpy(self.val_y[i:i + size]).to(
                    self.device)

        loss, accuracy = score_classifier(model, batches(), self.eval_shard)
        return {"val_loss": loss, "val_acc": accuracy}

    def describe(self) -> dict:
        return {"params": sum(p.numel() for p in self.model.parameters()), "data": self.info,
                "tokens_per_batch": self.tokens_per_batch}
