"""How a data-parallel run holds its model: replicated (DDP) or sharded (FSDP2).

`parallel.sharding` (conf/parallel/, read by tasks/train/parallel.py):
  ddp   every rank holds the whole model, gradients and optimizer state; DDP averages the
        gradients (the default; what every run before FSDP2 used)
  fsdp  torch's `fully_shard` (FSDP2): each block of the model (every module in a ModuleList:
        GPT blocks, Llama decoder layers) and then the rest are sharded row-wise over the ranks,
        so parameters, gradients and optimizer state take 1/world of the memory each; a block's
        parameters are gathered for its forward and backward only. A full fine-tune of a 7B
        model (16 bytes a parameter with AdamW) fits 8×80 GB this way and not at all with DDP.

Both compute the same update as one process (gradients averaged over the same global batch);
the optimizer must be able to update shards (tasks/train/sharding_rules.py checks it):
elementwise ones update their shard, the Muon family gathers each whole matrix for its
orthogonalization (optim/_common.py Batch.whole).
How a sharded run's checkpoint is written and read is tasks/train/snapshot.py's.
"""

from __future__ import annotations

import torch.nn as nn
from torch.distributed.tensor import DTensor


def shard(model: nn.Module) -> nn.Module:
    """fully_shard every block (each module of each ModuleList), then the root (the rest)."""
    from torch.distributed.fsdp import fully_shard

    for blocks in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
        for block in blocks:
            fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())
