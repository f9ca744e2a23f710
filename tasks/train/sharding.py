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
Checkpoints hold whole tensors, gathered one at a time to rank 0 (so a resumed run may use
any number of ranks, or none).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor

from optim._dtensor import shard_of, whole_of


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


# ---------------------------------------------------------------- whole tensors for checkpoints


def whole_model_state(state: dict, is_main: bool) -> dict:
    """A model state_dict with every sharded tensor gathered whole, one at a time, onto rank
    0's host (collective: every rank calls it; the others get an empty dict)."""
    out = {}
    for name, value in state.items():
        if isinstance(value, DTensor):
            value = value.full_tensor()
            value = value.cpu() if is_main else None
        if is_main:
            out[name] = value
    return out


def _per_element(value, param) -> bool:
    """Whether an optimizer state tensor holds one value per element of `param` (and so is
    sharded like it): a local shard of our optimizers, or torch's own DTensor state."""
    return (isinstance(param, DTensor) and isinstance(value, torch.Tensor)
            and value.dim() == param.dim() and value.dim() > 0)


def whole_optimizer_state(optimizer: torch.optim.Optimizer, is_main: bool) -> dict:
    """optimizer.state_dict() with per-element state gathered whole onto rank 0's host
    (collective). Our optimizers keep plain tensors for their shards; torch's keep DTensors."""
    state_dict = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, live in state_dict["state"].items():
        param = params[index]
        state = state_dict["state"][index] = dict(live)  # the optimizer's own dict otherwise
        for key, value in live.items():
            if not _per_element(value, param):
                continue
            value = value.full_tensor() if isinstance(value, DTensor) \
                else whole_of(value, param)
            state[key] = value.cpu() if is_main else None
    return state_dict if is_main else {}


def load_whole_model_state(model: nn.Module, state: dict) -> dict:
    """`state` (whole tensors) with each sharded parameter's tensor cut to this rank's shard."""
    current = model.state_dict()
    return {name: shard_of(value, current[name]) if isinstance(current.get(name), DTensor)
            else value for name, value in state.items()}


def load_whole_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """A whole optimizer state_dict cut to this rank's shards, in the form the optimizer keeps:
    plain shards for ours (Batch works on local tensors), DTensors for torch's."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    keeps_dtensors = type(optimizer).__module__.startswith("torch.")
    for index, state in state_dict["state"].items():
        param = params[int(index)]
        for key, value in state.items():
            if _per_element(value, param) and value.shape == param.shape:
                value = shard_of(value, param)
                state[key] = value if keeps_dtensors else value.to_local()
    return state_dict
