"""Assemble one run from its config: device, seed, task, precision, optimizer, data-parallel
wrapper, schedule and trainer, restored from the run's checkpoint when there is one. The order
matters for the numbers (the seed is set before the task builds its model), so this is the one
way a run is put together: the runner, the benchmarks and the tests all call `build_run`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from optim import hooks
from optim._compilers import compiler_missing
from optim.routing import is_matrix_optimizer, param_groups
from tasks.train import checkpoint, distributed, parallel, sharding, sharding_rules, snapshot, store
from tasks.train.epochs import check_loaded
from tasks.train.errors import ConfigError
from tasks.train.loop import Trainer
from tasks.train.metrics import LossTracker, SpikeConfig
from tasks.train.precision import Precision
from tasks.train.schedule import build_scheduler


def gpus_requested(cfg) -> int:
    """GPUs the run `cfg` was given: its launcher's gpus_per_node, or SLURM's own record of
    them (a count in SLURM_GPUS_ON_NODE, index lists in SLURM_JOB_GPUS / SLURM_STEP_GPUS)."""
    counts = [int((cfg.get("launcher") or {}).get("gpus_per_node") or 0)]
    on_node = os.environ.get("SLURM_GPUS_ON_NODE", "")
    if on_node.isdigit():
        counts.append(int(on_node))
    for var in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        if os.environ.get(var):
            counts.append(len(os.environ[var].split(",")))
    return max(counts)


def no_cuda_message(asked: str) -> str:
    """Why CUDA is unusable here and what to do: the torch build's CUDA version, the fix."""
    build = torch.version.cuda
    if build is None:
        why = f"this torch ({torch.__version__}) is a CPU-only build"
    else:
        why = (f"this torch ({torch.__version__}) is built for CUDA {build}, which the CUDA "
               f"driver here does not run (no driver, no visible GPU, or a driver too old for "
               f"CUDA {build})")
    return (f"{asked} but CUDA is not available: {why}. Install a torch build that the "
            f"cluster's driver supports (`nvidia-smi` shows the driver's highest CUDA version; "
            f"then e.g. `pip install torch --index-url "
            f"https://download.pytorch.org/whl/cu126`), or train on CPU on purpose with "
            f"device=cpu and launcher.gpus_per_node=0")


def resolve_device(name: str, gpus: int = 0) -> torch.device:
    """The run's device; `gpus`: how many GPUs the job was given (device=auto must not fall
    back to CPU silently then)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if gpus > 0:
            raise ConfigError(no_cuda_message(f"device=auto and the job was given {gpus} "
                                              f"GPU(s)"))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(no_cuda_message(f"device={name!r}"))
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def rank_device(device: torch.device, ctx: distributed.Context) -> torch.device:
    """A data-parallel rank's own GPU (its local rank's, or the one GPU a task sees where the
    scheduler binds one to each: distributed.local_gpu), made the current CUDA device, so that
    whatever allocates on "cuda" without an index (bitsandbytes' 4-bit loading, NCCL) lands on
    it rather than on GPU 0."""
    if device.type != "cuda" or not ctx.enabled:
        return device
    device = torch.device("cuda", distributed.local_gpu(ctx.local_rank))
    torch.cuda.set_device(device)
    return device


def build_task(cfg: DictConfig, device: torch.device):
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    # grad_accum: tasks that order data by epoch need the micro-batches per step
    return instantiate(task_cfg, seed=cfg.seed, device=device, data_root=cfg.data_root,
                       grad_accum=cfg.grad_accum)


def optimizer_kwargs(optim_cfg: DictConfig | dict) -> dict:
    """The optimizer's constructor config: everything but our own `name` label."""
    if isinstance(optim_cfg, DictConfig):
        optim_cfg = OmegaConf.to_container(optim_cfg, resolve=True)
    return {k: v for k, v in optim_cfg.items() if k != "name"}


def build_optimizer(optim_cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    factory = instantiate(optimizer_kwargs(optim_cfg))
    optimizer = factory(param_groups(model, is_matrix_optimizer(factory)))
    hooks.attach(optimizer, model)  # optimizers that read activations (SMuon)
    _compiled_or_notice(optimizer, model)
    return optimizer


def _compiled_or_notice(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """A run asked for the compiled kernels (`optim.fused=true`, the paper scales' default)
    where no compiler builds them: it runs the default path instead (the same math, tested
    equal to rounding), says so on stderr, and records it (`optimizer.path_notice`, in the
    summary). Never silently."""
    asked = [g for g in optimizer.param_groups if g.get("fused")]
    params = list(model.parameters())
    if not asked or not params:
        return
    missing = compiler_missing(params[0].device)
    if missing is None:
        return
    for group in asked:
        group["fused"] = False
    optimizer.path_notice = (f"optim.fused=true, but {missing}: running "
                             f"{type(optimizer).__name__}'s default path instead (the same "
                             f"math, equal to rounding)")
    print(f"[optbench] NOTICE: {optimizer.path_notice}", file=sys.stderr)


def build_precision(precision_cfg: DictConfig, device: torch.device) -> Precision:
    return Precision(precision_cfg.name, device, precision_cfg.get("compute", "bf16"))


def build_run(cfg: DictConfig, ctx: distributed.Context = distributed.Context(),
              rdir: Path | None = None):
    """(task, trainer, device): the one way a run is assembled (the runner, the benchmarks,
    the tests). With a run dir the metrics log and checkpoint live there and the trainer is
    restored from the run's checkpoint if any; without one nothing is read or written."""
    device = rank_device(resolve_device(cfg.device, gpus_requested(cfg)), ctx)
    torch.manual_seed(cfg.seed)
    task = build_task(cfg, device)
    if cfg.get("epochs") is not None:
        check_loaded(cfg, task.epoch_examples)
    precision = build_precision(cfg.precision, device)
    task.model = precision.prepare_model(task.model)
    how = parallel.of(cfg).sharding
    sharding_rules.check(how, get_class(cfg.optim["_target_"]), task.model)
    if ctx.enabled and how == "fsdp":  # sharded before the optimizer sees the parameters
        sharding.shard(task.model)
    optimizer = build_optimizer(cfg.optim, task.model)
    train_model = task.model
    if ctx.enabled and how == "ddp":
        train_model = torch.nn.parallel.DistributedDataParallel(
            task.model, device_ids=[device.index] if device.type == "cuda" else None)
    if task.compile:  # the wrapper compiled, not the module inside it: DDP's buckets then
        train_model = torch.compile(train_model)  # split the graph (torch's DDPOptimizer)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.steps)
    nowhere = Path(os.devnull)
    trainer = Trainer(cfg, task, optimizer, scheduler, LossTracker(SpikeConfig(**cfg.metrics)),
                      store.MetricsLog(rdir / "metrics.jsonl" if rdir else nowhere), None,
                      rdir / "ckpt.pt" if rdir else None, precision, ctx, train_model)
    if rdir is not None and snapshot.exists(trainer):
        try:
            trainer.load_checkpoint()
            print(f"[optbench] resuming {rdir} from step {trainer.state.step}")
        except checkpoint.CheckpointError:
            if not cfg.get("discard_bad_checkpoint"):
                raise
            checkpoint.discard(trainer.ckpt_path)
            print(f"[optbench] discard_bad_checkpoint=true: the checkpoints of {rdir} were set "
                  f"aside (*.discarded); starting from step 0")
    return task, trainer, device
