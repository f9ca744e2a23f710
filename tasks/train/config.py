"""Check a composed run config before anything trains (or is submitted): each component's own
check (schedule, metrics, precision, logger, optimizer, task), the keys each reads, and, where
the run trains, its device and data. Every error names the config key at fault and, where the
set is closed, the allowed values.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import sys
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from optim._common import check_beta, check_betas, check_lr_wd
from tasks.train import checks, parallel
from tasks.train.assemble import (
    build_optimizer,
    gpus_requested,
    optimizer_kwargs,
    resolve_device,
)
from tasks.train.errors import ConfigError
from tasks.train.metrics import SpikeConfig
from tasks.train.precision import validate_precision
from tasks.train.schedule import validate_schedule
from tasks.train.wandb_mirror import validate_logger

SPIKE_KEYS = tuple(f.name for f in dataclasses.fields(SpikeConfig))

# The top-level keys of a run config (conf/train.yaml and its groups): what the runner reads.
RUN_KEYS = ("task", "optim", "schedule", "precision", "logger", "launcher", "parallel", "seed",
            "steps", "epochs", "grad_accum", "grad_clip", "eval_every", "log_every",
            "checkpoint_every", "checkpoint_every_min", "discard_bad_checkpoint", "device",
            "progress", "runs_root", "data_root", "sweep", "metrics", "hydra")
# Set by the runner itself when it builds a task, never by the task config.
HARNESS_TASK_ARGS = ("seed", "device", "data_root", "grad_accum")
RUN_BOOLEANS = {"progress": True, "discard_bad_checkpoint": False}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_SEED = 2**32 - 1  # numpy's legacy generators and every seed a task derives stay in range


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_int(cfg: dict, key: str, minimum: int = 1) -> None:
    value = cfg.get(key)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{key} must be an integer >= {minimum}, got {value!r}",
    )


def validate_optim(optim_cfg: dict, accepted: set[str] | None = None) -> None:
    """The optimizer's keys (those its class reads), its lr, weight decay and betas (by the
    rules in optim/_common.py, for torch.optim's classes too: torch accepts lr=inf), then its
    constructor's own checks on a throw-away model. `accepted`: the optimizer configs (lr
    aside) whose constructor already accepted them, kept by the caller across a sweep."""
    _require("name" in optim_cfg and "_target_" in optim_cfg,
             "optim must have `name` and `_target_` (see conf/optim/*.yaml)")
    name = optim_cfg["name"]
    try:
        cls = get_class(optim_cfg["_target_"])
    except Exception as e:
        raise ConfigError(f"optim._target_ {optim_cfg['_target_']!r} cannot be imported: "
                          f"{e}") from e
    try:
        readable = constructor_keys(cls, skip=("params",))
        if readable is not None:
            checks.known_keys("optim", optim_cfg, ("name", "_target_", "_partial_", *readable))
        check_lr_wd(optim_cfg.get("lr"), optim_cfg.get("weight_decay", 0.0), prefix="optim.")
        defaults = inspect.signature(cls).parameters
        checks.booleans("optim", optim_cfg, {k: p.default for k, p in defaults.items()})
        for key in ("betas", "aux_betas"):
            if key in optim_cfg:  # as many as the class's default has (Adan has three)
                default = defaults[key].default if key in defaults else None
                check_betas(f"optim.{key}", optim_cfg[key],
                            len(default) if isinstance(default, (list, tuple)) else 2)
        for key in ("beta", "beta1", "beta2", "momentum"):
            if optim_cfg.get(key) is not None:
                check_beta(f"optim.{key}", optim_cfg[key])
    except ValueError as e:
        raise ConfigError(f"optim ({name}): {e}") from e
    kwargs = optimizer_kwargs(optim_cfg)
    signature = json.dumps({k: v for k, v in kwargs.items() if k != "lr"}, sort_keys=True,
                           default=str)
    if accepted is not None and signature in accepted:  # the sweep checked it already
        return
    try:
        _construct(cls, optim_cfg)
    except (ValueError, TypeError, InstantiationException) as e:
        raise ConfigError(f"optim ({name}): {e}") from e
    if accepted is not None:
        accepted.add(signature)


EMPTY = "optimizer got an empty parameter list"  # torch.optim.Optimizer's own refusal


def _construct(cls: type, optim_cfg: dict) -> None:
    """The constructor's own checks. Ours and torch.optim's check every argument before they
    look at a parameter, so they are built on no parameters and stop at torch's refusal of an
    empty list, after their checks: a construction on parameters would import torch._dynamo
    (1.2 s, torch.optim's add_param_group), which a sweep that compiles nothing should not pay.
    Any other class (a contender) is built on a throw-away model's parameter groups, as a run
    would give them."""
    if cls.__module__.split(".")[0] in ("optim", "torch"):
        try:
            instantiate(optimizer_kwargs(optim_cfg))([])
        except ValueError as e:
            if str(e) != EMPTY:
                raise
        return
    build_optimizer(optim_cfg, _throwaway_model())


def _throwaway_model() -> torch.nn.Module:
    """An embedding, a hidden matrix and a head: every role a parameter can route to."""
    return torch.nn.Sequential(torch.nn.Embedding(4, 4), torch.nn.Linear(4, 4),
                               torch.nn.Linear(4, 4))


def validate(cfg: DictConfig | dict, accepted: set[str] | None = None) -> None:
    """Raise ConfigError on the first key that cannot run (a composed or resolved config);
    `accepted` as in `validate_optim`."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    for key in ("steps", "grad_accum", "eval_every", "log_every"):
        _positive_int(cfg, key)
    _positive_int(cfg, "checkpoint_every", minimum=0)
    every_min = cfg.get("checkpoint_every_min")
    _require(every_min is None or (isinstance(every_min, (int, float))
                                   and not isinstance(every_min, bool)
                                   and math.isfinite(every_min) and every_min > 0),
             f"checkpoint_every_min must be null or a number of minutes > 0, got {every_min!r}")
    _positive_int(cfg, "seed", minimum=0)
    _require(cfg["seed"] <= MAX_SEED, f"seed must be an integer in [0, {MAX_SEED}], got "
                                      f"{cfg['seed']!r}")
    clip, device = cfg["grad_clip"], cfg["device"]
    _require(clip is None or (isinstance(clip, (int, float)) and not isinstance(clip, bool)
                              and math.isfinite(clip) and clip > 0),
             f"grad_clip must be null or a finite number > 0, got {clip!r}")
    _require(isinstance(device, str) and DEVICE.fullmatch(device) is not None,
             f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    for key in ("runs_root", "data_root"):
        check_folder(key, cfg[key])
    try:  # each component's own check, the one its constructor runs
        checks.known_keys("", cfg, RUN_KEYS)
        checks.booleans("", cfg, RUN_BOOLEANS)
        validate_schedule(cfg["schedule"], cfg["steps"])
        checks.known_keys("metrics", cfg["metrics"], SPIKE_KEYS)
        SpikeConfig(**cfg["metrics"])
        validate_precision(cfg["precision"])
        validate_logger(cfg["logger"])
        parallel.of(cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
    validate_optim(cfg["optim"], accepted)
    validate_task(cfg["task"])


def validate_task(task_cfg: dict) -> None:
    """The task's own checks (sizes, divisibility, probabilities, names), from its class."""
    target = task_cfg.get("_target_")
    _require(isinstance(target, str), "task must have a `_target_` (see conf/task/*.yaml)")
    try:
        cls = get_class(target)
    except Exception as e:
        raise ConfigError(f"task._target_ {target!r} cannot be imported: {e}") from e
    given_by_run = [k for k in HARNESS_TASK_ARGS if k in task_cfg]
    _require(not given_by_run, f"task.{given_by_run[0] if given_by_run else ''} is set by the "
                               f"run, not by the task config (use the top-level key instead)")
    # the constructor's defaults stand in for keys the config leaves out
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    try:
        readable = constructor_keys(cls, skip=HARNESS_TASK_ARGS)
        if readable is not None:
            checks.known_keys("task", task_cfg, ("_target_", *readable))
        checks.booleans("task", task_cfg, defaults)
        cls.validate_config({**defaults, **task_cfg})
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e


def check_folder(key: str, value) -> None:
    """A folder the run writes or reads under: a non-empty path whose existing part is a
    folder (not a file, not /dev/null), so that nothing lands in the current directory or
    fails after the run dir exists."""
    _require(isinstance(value, str) and value.strip() != "",
             f"{key} must be a folder's path, got {value!r} (an empty OPTBENCH_RUNS or "
             f"OPTBENCH_DATA? set it to a folder, or unset it)")
    path = Path(value).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    _require(existing.is_dir(), f"{key}={value!r}: {existing} is not a folder")


def constructor_keys(cls, skip=()) -> list[str] | None:
    """The keyword arguments `cls(...)` accepts (less `skip`); None when it takes **kwargs
    (then its own check must catch a key it does not read)."""
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.name not in skip and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def check_data(cfg: DictConfig | dict) -> None:
    """What the run reads is prepared here (checked where the run trains, before its run dir
    exists: a login node may lack the data a compute node has). Tasks that do not declare
    their data (`data_needs`) are not checked."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cls = get_class(cfg["task"]["_target_"])
    if not hasattr(cls, "data_needs"):
        return
    missing = [need for need in cls.data_needs(cfg) if not need.ready]
    if missing:
        raise ConfigError("; ".join(
            f"{need.name} is not prepared (looked in {need.path}); prepare it with: "
            f"{need.prepare}" for need in missing))


_SIZES: dict[str, float] = {}  # one sizing per distinct model config (a table's runs share it)


def device_memory(device: torch.device) -> float | None:
    """Bytes of memory the device has: a GPU's own, the host's for the CPU; None unknown."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    if device.type == "cpu":
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return None


def check_fits(cfg: DictConfig | dict) -> None:
    """The run's weights and gradients alone (a lower bound: activations and the optimizer's
    state come on top) fit the memory of the device it trains on: a size typed wrong
    (`task.dim=1e11`) is refused here, before its run dir exists, rather than failing to
    allocate inside it. Sized from the task's own `cost` (tasks/train/base.py), once per model
    config in a process."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    key = json.dumps({k: cfg.get(k) for k in ("task", "precision", "steps", "grad_accum",
                                              "eval_every")}, sort_keys=True, default=str)
    if key not in _SIZES:
        try:
            cost = get_class(cfg["task"]["_target_"]).cost(cfg)
        except NotImplementedError:  # a task that cannot be planned (a test's): not sized
            _SIZES[key] = 0.0
        except Exception as e:  # sizing is a check, never a reason a valid run fails
            print(f"[optbench] could not size the run before training ({type(e).__name__}: "
                  f"{e}); training without the memory check", file=sys.stderr)
            _SIZES[key] = 0.0
        else:
            _SIZES[key] = cost.memory_bytes.get("weights", 0.0) + \
                cost.memory_bytes.get("gradients", 0.0)
    need = _SIZES[key]
    launcher = cfg.get("launcher") or {}
    if parallel.of(cfg).fsdp:
        need /= int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)
    device = resolve_device(cfg["device"], gpus_requested(cfg))
    have = device_memory(device)
    if have is not None and need > have:
        raise ConfigError(f"the run needs at least {need / 1e9:.3g} GB for its weights and "
                          f"gradients alone, and {device} here has {have / 1e9:.3g} GB: check "
                          f"the task's sizes (task.*), or train on a larger device")


def validate_device(cfg) -> None:
    """The run's device exists here, and a job given GPUs can use them (checked where the run
    will train, not where a sweep is composed: a login node has no GPU)."""
    resolve_device(cfg["device"], gpus_requested(cfg))
