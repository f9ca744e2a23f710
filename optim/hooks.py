"""What a training loop may ask of an optimizer beyond torch.optim's API. All are optional:
torch's own optimizers have none, and the loop calls them through the functions below.

    attach(model)   read the model's activations (SMuon chooses p from them)
    log_values()    numbers worth a curve, logged beside the loss (SMuon's p per layer, the
                    Soft* temperature per group)
    train(), eval() the schedule-free optimizers' modes (schedulefree, pytorch-optimizer,
                    heavyball): their parameters are one point in training and another in
                    evaluation, AlgoPerf's `prepare_for_eval`. The loop trains in train mode,
                    evaluates in eval mode, and leaves a finished run in eval mode.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ReadsActivations(Protocol):
    def attach(self, model: torch.nn.Module) -> None: ...


@runtime_checkable
class LogsValues(Protocol):
    def log_values(self) -> dict[str, float]: ...


def attach(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    if isinstance(optimizer, ReadsActivations):
        optimizer.attach(model)


def log_values(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return optimizer.log_values() if isinstance(optimizer, LogsValues) else {}


@runtime_checkable
class SwitchesModes(Protocol):
    def train(self) -> None: ...

    def eval(self) -> None: ...


def train_mode(optimizer: torch.optim.Optimizer) -> None:
    """The optimizer's training mode, where it has modes (a no-op when already in it)."""
    if isinstance(optimizer, SwitchesModes):
        optimizer.train()


def eval_mode(optimizer: torch.optim.Optimizer) -> None:
    """The optimizer's evaluation mode (its evaluation weights in the model), where it has one."""
    if isinstance(optimizer, SwitchesModes):
        optimizer.eval()
