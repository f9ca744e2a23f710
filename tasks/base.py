"""What the training loop needs from a task. Adding a task means one module implementing this
and one config file under conf/task/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Target:
    """The eval metric a run tries to reach; feeds steps_to_target / tokens_to_target."""

    metric: str  # a key of Task.evaluate()'s result, e.g. "val_loss"
    value: float | None  # None: the task has no target
    mode: str = "min"  # "min": reached when metric <= value; "max": when >= value


class Task(Protocol):
    name: str
    model: nn.Module
    target: Target
    tokens_per_batch: int  # tokens (or examples) in one micro-batch, for tokens_to_target

    def train_batch(self, step: int, micro: int) -> Any:
        """Micro-batch `micro` of optimizer step `step`, a pure function of (seed, step, micro)."""

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of `model` on `batch`."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Eval metrics on a fixed set of batches (model is put in eval mode by the caller)."""

    def describe(self) -> dict:
        """Facts for summary.json (data hash, parameter count, ...)."""
