"""What a training loop may ask of an optimizer beyond torch.optim's API. Both are optional:
torch's own optimizers have neither, and the loop calls them through `attach` and `log_values`
below.

    attach(model)   read the model's activations (SMuon chooses p from them)
    log_values()    numbers worth a curve, logged beside the loss (SMuon's p per layer, the
                    Soft* temperature per group)
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
