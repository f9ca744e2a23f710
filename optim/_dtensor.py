"""FSDP2's sharded tensors (DTensors) as optimizers and the training loop meet them: this rank's
part, the whole tensor, and a whole tensor cut back into shards. A module of its own so that the
loop, which every run executes, depends on these three functions and not on the machinery our
own optimizers share (optim/_common.py): a run's code version then follows only the code it
executes (tasks/train/identity.py)."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor sharded by FSDP2 (a DTensor); any other tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def whole_of(shard: torch.Tensor, param: DTensor) -> torch.Tensor:
    """The whole tensor of which `shard` is this rank's part, sharded as `param` is
    (collective: every rank gathers)."""
    return DTensor.from_local(shard, param.device_mesh, param.placements, shape=param.shape,
                              stride=param.stride()).full_tensor()


def shard_of(whole: torch.Tensor, param: DTensor) -> DTensor:
    """`whole`, which every rank holds, cut as `param` is sharded (nothing communicated)."""
    return distribute_tensor(whole.to(param.device), param.device_mesh, param.placements,
                             src_data_rank=None)
