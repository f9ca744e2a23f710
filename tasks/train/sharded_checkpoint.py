"""A sharded run's checkpoint as torch's distributed checkpoint (torch.distributed.checkpoint):
each rank writes and reads only its own shards, in parallel, so a 7B run's checkpoint neither
gathers whole tensors onto rank 0's host nor makes every rank load the whole file on resume.

    ckpt.shards.<step>.<nonce>/   DCP's files: __<rank>_0.distcp per rank, .metadata
    ckpt.pt (+ .sha256)           the publish point, as for every run (tasks/train/checkpoint.py):
                                  the loop's counters, schedule, tracker and RNG, the optimizer
                                  state's structure and non-tensor values, and the shard
                                  folder's name with the SHA-256 of each of its files

The shard folder is written first, each rank hashing its own files; then rank 0 publishes
ckpt.pt, whose digest and rotation (ckpt.prev.pt) keep every guarantee of a whole checkpoint: a
crash before the publish leaves the previous checkpoint in force, and a folder no published
checkpoint names is removed after the next publish. A resume verifies every shard file against
its digest (each rank a share) before loading any.

Only tensors go through DCP. Our optimizers keep plain tensors for their shards; they are saved
as DTensors sharded like their parameters (so DCP neither deduplicates them as replicated nor
loses which rank holds what) and come back as plain shards.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.tensor import DTensor

from tasks.train import checkpoint, distributed
from tasks.train.checkpoint import CheckpointError

PREFIX = "ckpt.shards."
TENSOR = "__tensor__"  # marks a tensor's place in the optimizer state's structure


def _broadcast(value, ctx: distributed.Context):
    """Rank 0's `value` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _per_element(value, param) -> bool:
    return (isinstance(param, DTensor) and isinstance(value, torch.Tensor)
            and value.dim() == param.dim() and value.dim() > 0)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(its state's structure with each tensor replaced by a marker, the tensors by key)."""
    state_dict = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    tensors, structure = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, state in state_dict["state"].items():
        param, kept = params[index], {}
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                kept[name] = value
                continue
            key = f"{index}/{name}"
            per_element = _per_element(value, param)
            if per_element and not isinstance(value, DTensor):  # our optimizers' plain shard
                value = DTensor.from_local(value, param.device_mesh, param.placements,
                                           shape=param.shape, stride=param.stride())
            tensors[key] = value
            kept[name] = {TENSOR: key, "per_element": per_element,
                          "dtensor": isinstance(state[name], DTensor),
                          "shape": list(value.shape), "dtype": str(value.dtype).split(".")[-1]}
        structure["state"][index] = kept
    return structure, tensors


def _empty_like_saved(spec: dict, param) -> torch.Tensor:
    dtype = getattr(torch, spec["dtype"])
    if spec["per_element"]:
        return torch.empty_like(param, dtype=dtype)  # a DTensor sharded as its parameter
    return torch.empty(spec["shape"], dtype=dtype, device=_device_of(param))


def _device_of(param) -> torch.device:
    return param.to_local().device if isinstance(param, DTensor) else param.device


def save(trainer, extras: dict) -> None:
    """Write the trainer's shards and publish them with `extras` (collective)."""
    ctx, rdir = trainer.ctx, Path(trainer.ckpt_path).parent
    name = _broadcast(f"{PREFIX}{trainer.state.step}.{uuid.uuid4().hex[:8]}"
                      if ctx.is_main else None, ctx)
    folder = rdir / name
    structure, optimizer_tensors = _optimizer_tensors(trainer.optimizer)
    dcp.save({"model": trainer.model_state(), "optimizer": optimizer_tensors},
             storage_writer=dcp.FileSystemWriter(folder, sync_files=True,
                                                 single_file_per_rank=True))
    mine = {p.name: checkpoint.sha256(p) for p in sorted(folder.glob(f"__{ctx.rank}_*"))}
    every = [None] * ctx.world
    dist.all_gather_object(every, mine)
    if ctx.is_main:
        digests = {k: v for part in every for k, v in part.items()}
        digests[".metadata"] = checkpoint.sha256(folder / ".metadata")
        _fsync_dir(folder)
        previous = getattr(trainer, "published_shards", None)
        checkpoint.save(trainer.ckpt_path, {**extras, "optimizer_structure": structure,
                                            "shards": {"folder": name, "digests": digests,
                                                       "world": ctx.world}})
        for old in rdir.glob(f"{PREFIX}*"):  # named by neither published checkpoint
            if old.name not in (name, previous):
                shutil.rmtree(old, ignore_errors=True)
    trainer.published_shards = name
    distributed.barrier(ctx)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(trainer, ckpt: dict) -> None:
    """Load the shards `ckpt` (a published ckpt.pt's contents) names into the trainer's model
    and optimizer, every file verified first (collective)."""
    ctx, shards = trainer.ctx, ckpt["shards"]
    folder = Path(trainer.ckpt_path).parent / shards["folder"]
    if shards["world"] != ctx.world:
        raise CheckpointError(f"{folder} was written by {shards['world']} ranks and this run "
                              f"has {ctx.world}: resume it on {shards['world']}")
    names = sorted(shards["digests"])
    bad = [n for i, n in enumerate(names) if i % ctx.world == ctx.rank
           and (not (folder / n).exists() or checkpoint.sha256(folder / n) != shards["digests"][n])]
    every = [None] * ctx.world
    dist.all_gather_object(every, bad)
    bad = sorted(n for part in every for n in part)
    if bad:
        raise CheckpointError(f"{folder}: {bad} missing or not matching their digests in "
                              f"{trainer.ckpt_path.name} (damaged or truncated). "
                              f"{checkpoint.DISCARD_HINT}")
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    structure = ckpt["optimizer_structure"]
    model_state = trainer.model_state()
    optimizer_tensors = {spec[TENSOR]: _empty_like_saved(spec, params[int(index)])
                         for index, state in structure["state"].items()
                         for spec in state.values() if isinstance(spec, dict) and TENSOR in spec}
    dcp.load({"model": model_state, "optimizer": optimizer_tensors}, checkpoint_id=folder)
    partial = trainer.task.checkpoint_trainable_only
    result = trainer.model.load_state_dict(model_state, strict=not partial)
    if partial and result.unexpected_keys:
        raise RuntimeError(f"checkpoint holds unknown tensors {result.unexpected_keys[:5]}")
    state = {}
    for index, saved in structure["state"].items():
        state[index] = {}
        for name, value in saved.items():
            if isinstance(value, dict) and TENSOR in value:
                value_now = optimizer_tensors[value[TENSOR]]
                if value["per_element"] and not value["dtensor"]:
                    value_now = value_now.to_local()  # ours keep plain shards
                value = value_now
            state[index][name] = value
    trainer.optimizer.load_state_dict({"state": state,
                                       "param_groups": structure["param_groups"]})
    trainer.published_shards = shards["folder"]
