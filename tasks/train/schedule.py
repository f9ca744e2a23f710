"""Learning-rate schedules: linear warm-up, then cosine / linear / wsd / constant.

Each returns the multiplier of every group's base lr at a step, so a torch LambdaLR applies it
and the optimizer's own lr stays the peak lr (what sweeps and tables report).
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("cosine", "linear", "wsd", "constant")


def lr_multiplier(
    step: int,
    *,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    decay_fraction: float = 0.2,
) -> float:
    """Multiplier at `step` (0-based, the step about to be taken)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    if name == "wsd":  # warm-up, stable, then linear decay over the last decay_fraction
        decay_start = total_steps - int(round(decay_fraction * total_steps))
        decay_start = max(decay_start, warmup_steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, total_steps - decay_start)
    else:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if name == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif name in ("linear", "wsd"):
        shape = 1.0 - progress
    else:
        raise ValueError(f"schedule.name must be one of {SCHEDULES}, got {name!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def warmup_steps(cfg, total_steps: int) -> int:
    """`warmup_steps` when set, else `warmup_fraction` of the run (so short runs still work)."""
    if cfg.get("warmup_steps") is not None:
        return int(cfg["warmup_steps"])
    return int(round(float(cfg.get("warmup_fraction", 0.0)) * total_steps))


def validate_schedule(cfg, total_steps: int) -> None:
    if cfg["name"] not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {list(SCHEDULES)}, got {cfg['name']!r}")
    if not 0.0 <= cfg.get("warmup_fraction", 0.0) < 1.0:
        raise ValueError(
            f"schedule.warmup_fraction must be in [0, 1), got {cfg.get('warmup_fraction')}"
        )
    warmup = warmup_steps(cfg, total_steps)
    if not 0 <= warmup < max(total_steps, 1):
        raise ValueError(
            f"schedule.warmup_steps must be in [0, steps={total_steps}), got {warmup}"
        )
    if not 0.0 <= cfg["min_lr_ratio"] <= 1.0:
        raise ValueError(f"schedule.min_lr_ratio must be in [0, 1], got {cfg['min_lr_ratio']}")
    if not 0.0 < cfg.get("decay_fraction", 0.2) <= 1.0:
        raise ValueError(
            f"schedule.decay_fraction must be in (0, 1], got {cfg.get('decay_fraction')}"
        )


def build_scheduler(optimizer, cfg, total_steps: int) -> LambdaLR:
    validate_schedule(cfg, total_steps)
    fn = partial(
        lr_multiplier,
        name=cfg.name,
        total_steps=total_steps,
        warmup_steps=warmup_steps(cfg, total_steps),
        min_lr_ratio=float(cfg.min_lr_ratio),
        decay_fraction=float(cfg.get("decay_fraction", 0.2)),
    )
    return LambdaLR(optimizer, fn)
