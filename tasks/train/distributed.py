"""Data parallelism: one process per device, joined through torch.distributed.

Inside a submitit job with several tasks, `init_from_submitit` exports the rendezvous variables
submitit knows (RANK, WORLD_SIZE, MASTER_ADDR, ...) and joins the group; a torchrun launch
(WORLD_SIZE already set) joins the same way. NCCL on GPUs, gloo on CPU.

Equivalence with one process: the global batch of a step is its `grad_accum` micro-batches;
rank r computes micro-batches r, r + W, r + 2W, ... and DDP averages the gradients, so every
step sees the same data and the same mean gradient as a single process would.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


DEFAULT_TIMEOUT_MIN = 30.0  # the parallel group's `timeout_min` (conf/parallel/)


def init_from_submitit(timeout_min: float = DEFAULT_TIMEOUT_MIN) -> None:
    """Join torch.distributed if this is one task of a multi-task submitit job."""
    try:
        import submitit

        env = submitit.JobEnvironment()
    except RuntimeError:
        return
    if env.num_tasks > 1 and not dist.is_initialized():
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        _init(timeout_min)


_control_group = None  # gloo, for flags: agreeing on one needs no GPU synchronization


def local_gpu(local_rank: int) -> int:
    """The index of this process's GPU among the ones it sees: its local rank where it sees
    all of the node's GPUs, 0 where the scheduler gave each task one (SLURM's GPU binding, or
    CUDA_VISIBLE_DEVICES per task), where cuda:LOCAL_RANK would name a GPU that is not there."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0
    if local_rank >= count:
        raise RuntimeError(f"local rank {local_rank} but this process sees {count} GPU(s): "
                           f"give each task one GPU, or every task all of the node's")
    return local_rank


def _init(timeout_min: float = DEFAULT_TIMEOUT_MIN) -> None:
    """Join the group: NCCL bound to this process's GPU (`device_id`, so its communicator is
    made at once on the right device) on GPUs, gloo on CPUs; a collective waits `timeout_min`
    (torch's default of 10 minutes is less than a 7B checkpoint's barrier can take)."""
    timeout = datetime.timedelta(minutes=timeout_min)
    if torch.cuda.is_available():
        gpu = torch.device("cuda", local_gpu(int(os.environ.get("LOCAL_RANK", "0"))))
        dist.init_process_group(backend="nccl", timeout=timeout, device_id=gpu)
    else:
        dist.init_process_group(backend="gloo", timeout=timeout)
    _flags_group()


def _flags_group():
    """The group flags are agreed over: the default one where it is gloo, else a gloo group
    made once (collectively: every rank gets here at the same call), also when something else
    initialized torch.distributed with NCCL."""
    global _control_group
    if _control_group is None and dist.get_backend() != "gloo":
        _control_group = dist.new_group(backend="gloo")
    return _control_group


def context(timeout_min: float = DEFAULT_TIMEOUT_MIN) -> Context:
    """The current process's place; joins the group first if the environment asks for one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        _init(timeout_min)
    if not dist.is_initialized():
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", "0")))


def all_sum(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_flag(flag: bool, ctx: Context) -> bool:
    """True on every rank if it is true on any (e.g. a preemption signal seen by one task).
    A host-side all-reduce (gloo): asked every step, it never waits for the GPU."""
    return any_flags((flag,), ctx)[0]


def any_flags(flags: tuple[bool, ...], ctx: Context) -> tuple[bool, ...]:
    """`any_flag` for several flags in one all-reduce."""
    if not ctx.enabled:
        return tuple(flags)
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_flags_group())
    return tuple(bool(v) for v in t.tolist())


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the group, and free what still holds it while the interpreter is whole.

    Sharded tensors (FSDP2's DTensors, often in reference cycles) keep a gloo group's worker
    threads alive past destroy_process_group. Left to the interpreter's exit, a worker that
    drops its last tensor reference needs the GIL while the interpreter is finalizing, and the
    process aborts ("terminate called without an active exception"; measured on two gloo
    ranks whose DTensors sat in a dropped cycle: 3 in 30 exits without the collection below,
    0 in 30 with it).
    """
    global _control_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _control_group = None  # it belonged to the group just destroyed
    gc.collect()


REPLICA_CHUNK = 1 << 24  # values compared per broadcast: 64 MB of fp32 at most, any model size


def replica_divergence(model: torch.nn.Module, ctx: Context) -> float | None:
    """Max |θ_rank − θ_rank0| over the trained parameters and ranks (0.0 = identical replicas;
    None for a sharded model, which has no replicas).

    Data-parallel replicas must apply identical updates (same averaged gradient, same optimizer
    noise); this checks that they did. Frozen parameters (a LoRA base) are skipped: they never
    change. The comparison goes chunk by chunk, so it needs REPLICA_CHUNK floats of memory
    however large the model (a whole-model fp32 copy of a 7B base is ~30 GB, twice over).
    """
    if not ctx.enabled:
        return 0.0
    if any(isinstance(p, DTensor) for p in model.parameters()):
        return None  # FSDP2 holds no replicas to compare
    diff = None
    for p in model.parameters():
        if not p.requires_grad:
            continue
        for chunk in p.detach().reshape(-1).split(REPLICA_CHUNK):
            mine = chunk.float()
            reference = mine.clone()
            dist.broadcast(reference, src=0)
            local = (mine - reference).abs().max()
            diff = local if diff is None else torch.maximum(diff, local)
    if diff is None:
        diff = torch.zeros((), device=next(model.parameters()).device)
    diff = diff.reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())
