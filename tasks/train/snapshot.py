"""What a checkpoint holds of a trainer, and how it is written and read back: the model, the
optimizer, the schedule, the loss tracker, the loop's counters and every RNG state, as one
verified file (tasks/train/checkpoint.py). A checkpoint never changes a number a run computes
(a resume is exact, tested), so the run's code version does not follow this module.

Sharded runs (FSDP2) write torch's distributed checkpoint by default (parallel.checkpoint:
sharded; tasks/train/sharded_checkpoint.py): each rank its own shards, ckpt.pt their publish
point. With parallel.checkpoint=whole every rank gathers the shards, whole tensors one at a time
onto rank 0, which writes one file; on resume each rank takes its own shards from it. A resume
reads whichever the published checkpoint is.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from optim._dtensor import shard_of, whole_of
from tasks.train import checkpoint, distributed, parallel, sharded_checkpoint


def rng_state() -> dict:
    """Every RNG state as tensors and plain types, so checkpoints load with weights_only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():  # this process's own GPU (a rank's, under data parallelism)
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # older checkpoints held every device's state
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)  # into this process's current device only


def exists(trainer) -> bool:
    return trainer.ckpt_path is not None and checkpoint.exists(trainer.ckpt_path)


def _extras(trainer) -> dict:
    """What a checkpoint holds besides the model and the optimizer."""
    return {"scheduler": trainer.scheduler.state_dict(),
            "tracker": trainer.tracker.state_dict(),
            "loop": vars(trainer.state),
            "rng": rng_state()}


def save(trainer) -> None:
    """Write the trainer's checkpoint (collective: every rank calls it)."""
    main = trainer.ctx.is_main
    if main:
        trainer.metrics_log.sync()  # the rows this checkpoint covers are on disk before it is
    if trainer.sharded and parallel.of(trainer.cfg).checkpoint == "sharded":
        sharded_checkpoint.save(trainer, _extras(trainer))
        return
    if trainer.sharded:  # every rank gathers the shards (whole tensors onto rank 0)
        model_state = whole_model_state(trainer.model_state(), main)
        optimizer_state = whole_optimizer_state(trainer.optimizer, main)
    elif main:
        model_state, optimizer_state = trainer.model_state(), trainer.optimizer.state_dict()
    if not main:
        distributed.barrier(trainer.ctx)
        return
    checkpoint.save(trainer.ckpt_path, {"model": model_state, "optimizer": optimizer_state,
                                        **_extras(trainer)})
    distributed.barrier(trainer.ctx)


def load(trainer) -> dict:
    """Restore the trainer from its checkpoint; returns the loop's counters (LoopState's
    fields)."""
    ckpt = checkpoint.load(trainer.ckpt_path)
    if "shards" in ckpt:  # torch's distributed checkpoint, each rank its own shards
        if not trainer.sharded:
            raise checkpoint.CheckpointError(
                f"{trainer.ckpt_path} is a sharded checkpoint of {ckpt['shards']['world']} "
                f"ranks: resume the run with parallel=fsdp on {ckpt['shards']['world']} ranks")
        sharded_checkpoint.load(trainer, ckpt)
    else:
        _load_whole(trainer, ckpt)
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    trainer.tracker.load_state_dict(ckpt["tracker"])
    set_rng_state(ckpt["rng"])
    return ckpt["loop"]


def _load_whole(trainer, ckpt: dict) -> None:
    partial = trainer.task.checkpoint_trainable_only
    if trainer.sharded:  # whole tensors in the file: each rank takes its shards
        ckpt["model"] = load_whole_model_state(trainer.model, ckpt["model"])
        ckpt["optimizer"] = load_whole_optimizer_state(trainer.optimizer, ckpt["optimizer"])
    result = trainer.model.load_state_dict(ckpt["model"], strict=not partial)
    if partial and result.unexpected_keys:
        raise RuntimeError(f"checkpoint holds unknown tensors {result.unexpected_keys[:5]}")
    trainer.optimizer.load_state_dict(ckpt["optimizer"])


# ---------------------------------------------------------------- whole tensors of a sharded run


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


def load_whole_model_state(model: torch.nn.Module, state: dict) -> dict:
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
