"""A minimal task for exercising the loop: least squares on a fixed random problem, with
switches to make a chosen step produce a NaN loss or raise."""

import os

import torch
import torch.nn as nn

from tasks.train import checks
from tasks.train.base import Target, Task


class QuadraticTask(Task):
    checkpoint_trainable_only = False  # the whole model trains

    def __init__(self, *, seed, device, data_root, name="quadratic", dim=8, batch_size=16,
                 nan_at_step=None, raise_at_step=None, grad_accum=1):
        g = torch.Generator().manual_seed(1234)
        self.w_true = torch.randn(dim, 1, generator=g)
        self.name, self.seed, self.dim, self.batch_size = name, seed, dim, batch_size
        self.nan_at_step, self.raise_at_step = nan_at_step, raise_at_step
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)
        self.tokens_per_batch = batch_size
        self.target = Target("val_loss", 0.05, "min")

    @classmethod
    def validate_config(cls, task):
        checks.integer(task, "dim")
        checks.integer(task, "batch_size")

    @classmethod
    def data_needs(cls, cfg):
        return ()  # generated in the run

    @classmethod
    def cost(cls, cfg):
        raise NotImplementedError("a test task: nothing to plan")

    def train_batch(self, step, micro):
        if self.raise_at_step is not None and step == self.raise_at_step and \
                not os.environ.get("OPTBENCH_TEST_NO_RAISE"):
            raise RuntimeError(f"boom at step {step}")
        g = torch.Generator().manual_seed(self.seed * 100_000 + step * 10 + micro)
        x = torch.randn(self.batch_size, self.dim, generator=g)
        return step, x, x @ self.w_true

    def loss(self, model, batch):
        step, x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        if self.nan_at_step is not None and step >= self.nan_at_step:
            loss = loss * float("nan")
        return loss

    def evaluate(self, model):
        g = torch.Generator().manual_seed(99)
        x = torch.randn(256, self.dim, generator=g)
        return {"val_loss": float(((model(x) - x @ self.w_true) ** 2).mean())}

    def describe(self):
        return {"params": sum(p.numel() for p in self.model.parameters())}
