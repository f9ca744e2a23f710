"""Check a composed run config before anything trains (or is submitted), and build its parts.

Every error names the config key at fault and, where the set is closed, the allowed values.
"""

from __future__ import annotations

import inspect
import json

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

import optim
from tasks.errors import ConfigError
from tasks.metrics import SpikeConfig
from tasks.precision import COMPUTE_DTYPES, PRECISIONS, Precision
from tasks.schedule import validate_schedule

LOGGERS = ("none", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_int(cfg: dict, key: str, minimum: int = 1) -> None:
    value = cfg.get(key)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{key} must be an integer >= {minimum}, got {value!r}",
    )


def optimizer_kwargs(optim_cfg: DictConfig | dict) -> dict:
    """The optimizer's constructor config: everything but our own `name` label."""
    if isinstance(optim_cfg, DictConfig):
        optim_cfg = OmegaConf.to_container(optim_cfg, resolve=True)
    return {k: v for k, v in optim_cfg.items() if k != "name"}


def validate_optim(optim_cfg: dict) -> None:
    _require("name" in optim_cfg and "_target_" in optim_cfg,
             "optim must have `name` and `_target_` (see conf/optim/*.yaml)")
    lr = optim_cfg.get("lr")
    _require(isinstance(lr, (int, float)) and lr > 0, f"optim.lr must be > 0, got {lr!r}")
    wd = optim_cfg.get("weight_decay", 0.0)
    _require(isinstance(wd, (int, float)) and wd >= 0,
             f"optim.weight_decay must be >= 0, got {wd!r}")
    for key in ("betas",):
        for i, beta in enumerate(optim_cfg.get(key) or []):
            _require(0.0 <= beta < 1.0, f"optim.{key}[{i}] must be in [0, 1), got {beta!r}")
    for key in ("beta", "beta1", "beta2", "momentum"):
        value = optim_cfg.get(key)
        if value is not None:
            _require(0.0 <= value < 1.0, f"optim.{key} must be in [0, 1), got {value!r}")
    # The constructor's own checks, run on throw-away parameters so that every
    # hyperparameter error surfaces here, before any data is read or job submitted.
    kwargs = optimizer_kwargs(optim_cfg)
    signature = json.dumps(kwargs, sort_keys=True, default=str)
    if signature in _CONSTRUCTED:  # a sweep validates many runs with the same optimizer
        return
    dummy = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    try:
        factory = instantiate(kwargs)
        factory(optim.param_groups(dummy, optim.is_matrix_optimizer(factory)))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optim ({optim_cfg['name']}): {e}") from e
    _CONSTRUCTED.add(signature)


_CONSTRUCTED: set[str] = set()  # optimizer configs whose constructor already accepted them


def validate(cfg: DictConfig | dict) -> None:
    """Raise ConfigError on the first key that cannot run (a composed or resolved config)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    for key in ("steps", "grad_accum", "eval_every", "log_every"):
        _positive_int(cfg, key)
    _positive_int(cfg, "checkpoint_every", minimum=0)
    clip, device = cfg["grad_clip"], cfg["device"]
    _require(clip is None or clip > 0, f"grad_clip must be null or > 0, got {clip!r}")
    _require(device == "auto" or device.split(":")[0] in ("cpu", "cuda", "mps"),
             f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    try:
        validate_schedule(cfg["schedule"], cfg["steps"])
        SpikeConfig(**cfg["metrics"])
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
    precision, logger = cfg["precision"]["name"], cfg["logger"]
    _require(precision in PRECISIONS,
             f"precision.name must be one of {list(PRECISIONS)}, got {precision!r}")
    compute = cfg["precision"].get("compute", "bf16")
    _require(compute in COMPUTE_DTYPES,
             f"precision.compute must be one of {list(COMPUTE_DTYPES)}, got {compute!r}")
    _require(logger["name"] in LOGGERS,
             f"logger.name must be one of {list(LOGGERS)}, got {logger['name']!r}")
    if logger["name"] == "wandb":
        _require(logger.get("mode") in WANDB_MODES,
                 f"logger.mode must be one of {list(WANDB_MODES)}, got {logger.get('mode')!r}")
    validate_optim(cfg["optim"])


# ---------------------------------------------------------------- building a run's parts


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine")
    return device


def build_task(cfg: DictConfig, device: torch.device):
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    extra = {"seed": cfg.seed, "device": device, "data_root": cfg.data_root}
    # tasks that order data by epoch need to know how many micro-batches make a step
    if "grad_accum" in inspect.signature(get_class(task_cfg["_target_"])).parameters:
        extra["grad_accum"] = cfg.grad_accum
    return instantiate(task_cfg, **extra)


def build_optimizer(optim_cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    factory = instantiate(optimizer_kwargs(optim_cfg))
    optimizer = factory(optim.param_groups(model, optim.is_matrix_optimizer(factory)))
    if hasattr(optimizer, "attach"):  # optimizers that read activations (SMuon)
        optimizer.attach(model)
    return optimizer


def precision(precision_cfg: DictConfig, device: torch.device) -> Precision:
    return Precision(precision_cfg.name, device, precision_cfg.get("compute", "bf16"))
