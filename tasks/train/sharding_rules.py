"""Which runs can shard with FSDP2 (tasks/train/sharding.py), checked before anything runs:
the parallel.sharding value, the optimizer (it must update shards exactly) and the model's
parameters. A check, not computing code: the run identity does not follow this module (it
imports the optimizer registry, every optimizer)."""

from __future__ import annotations

import torch.nn as nn

from tasks.train.errors import ConfigError
from tasks.train.parallel import SHARDINGS


def check(sharding: str, optimizer_cls: type, model: nn.Module | None = None) -> None:
    """Refuse, naming the value and what is allowed, what FSDP2 cannot run exactly (the
    model's parameters too, once it is built)."""
    if sharding not in SHARDINGS:
        raise ConfigError(f"parallel.sharding must be one of {list(SHARDINGS)}, got "
                          f"{sharding!r}")
    if sharding != "fsdp":
        return
    if not shardable(optimizer_cls):
        from optim import REGISTRY

        allowed = sorted(spec.name for spec in REGISTRY if shardable(spec.cls))
        raise ConfigError(f"parallel=fsdp: {optimizer_cls.__name__} cannot update "
                          f"sharded parameters exactly (it pools statistics over whole tensors "
                          f"or element positions); optimizers that can: {allowed}, or use "
                          f"parallel=ddp")
    frozen_ints = [n for n, p in (model.named_parameters() if model is not None else ())
                   if not p.dtype.is_floating_point]
    if frozen_ints:
        raise ConfigError(f"parallel=fsdp needs floating-point parameters; "
                          f"{frozen_ints[0]} is {model.get_parameter(frozen_ints[0]).dtype} "
                          f"(a 4-bit QLoRA base): use parallel=ddp")


def shardable(optimizer_cls: type) -> bool:
    """Ours say so (`shardable`); torch.optim's own update DTensors natively."""
    return getattr(optimizer_cls, "shardable", optimizer_cls.__module__.startswith("torch."))
