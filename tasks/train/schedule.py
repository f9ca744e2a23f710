"""Learning-rate schedules: linear warm-up, then cosine / linear / wsd / constant.

Each returns the multiplier of every group's base lr at a step, so a torch LambdaLR applies it
and the optimizer's own lr stays the peak lr (what sweeps and tables report).

The Muon family's momentum warm-up (modded-nanoGPT's: the matrix groups' momentum rises
linearly from `momentum_warmup_start` to the configured value over `momentum_warmup_steps`)
rides along with the lr schedule: it is a function of the same step count, so a resumed run
sets the same momentum as an uninterrupted one and the checkpoint holds nothing new.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim.lr_scheduler import LambdaLR

from tasks.train import checks

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


# What build_scheduler reads of conf/schedule/<name>.yaml (decay_fraction: wsd only)
COMMON_KEYS = ("name", "warmup_fraction", "warmup_steps", "min_lr_ratio",
               "momentum_warmup_steps", "momentum_warmup_start")


def schedule_keys(name: str) -> tuple[str, ...]:
    return (*COMMON_KEYS, "decay_fraction") if name == "wsd" else COMMON_KEYS


def validate_schedule(cfg, total_steps: int) -> None:
    if cfg["name"] not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {list(SCHEDULES)}, got {cfg['name']!r}")
    checks.known_keys("schedule", cfg, schedule_keys(cfg["name"]))
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
    steps = cfg.get("momentum_warmup_steps") or 0
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"schedule.momentum_warmup_steps must be an integer >= 0, got {steps!r}")
    start = cfg.get("momentum_warmup_start")
    if steps and not (isinstance(start, (int, float)) and 0.0 <= start < 1.0):
        raise ValueError(f"schedule.momentum_warmup_start must be a number in [0, 1) when "
                         f"momentum_warmup_steps > 0, got {start!r}")
    if not 0.0 < cfg.get("decay_fraction", 0.2) <= 1.0:
        raise ValueError(
            f"schedule.decay_fraction must be in (0, 1], got {cfg.get('decay_fraction')}"
        )


MOMENTUM_KEYS = ("momentum", "beta1")  # Muon, SoftMuon, MuAdam / SMuon


class MomentumWarmup:
    """Sets each matrix group's momentum at a step; the configured value is the target."""

    def __init__(self, optimizer, start: float, steps: int):
        self.start, self.steps = start, steps
        self.groups = [g for g in optimizer.param_groups if g.get("use_matrix")]
        if not self.groups or not any(k in self.groups[0] for k in MOMENTUM_KEYS):
            raise ValueError(f"schedule.momentum_warmup_steps={steps} needs an optimizer of the "
                             f"Muon family (matrix groups with one of {MOMENTUM_KEYS})")
        self.keys = [next(k for k in MOMENTUM_KEYS if k in g) for g in self.groups]
        for g, key in zip(self.groups, self.keys):
            g.setdefault("momentum_target", g[key])  # kept in the optimizer's state_dict

    def apply(self, step: int) -> None:
        frac = min(step / self.steps, 1.0)
        for g, key in zip(self.groups, self.keys):
            g[key] = (1 - frac) * self.start + frac * g["momentum_target"]


class RunSchedule:
    """The lr schedule and, where configured, the momentum warm-up; checkpoints as the
    LambdaLR alone (the warm-up is a function of its step count)."""

    def __init__(self, lr: LambdaLR, momentum: MomentumWarmup | None = None):
        self.lr, self.momentum = lr, momentum
        self._apply()

    def _apply(self) -> None:
        if self.momentum is not None:
            self.momentum.apply(self.lr.last_epoch)  # the step about to be taken

    def step(self) -> None:
        self.lr.step()
        self._apply()

    def state_dict(self) -> dict:
        return self.lr.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.lr.load_state_dict(state)
        self._apply()


def build_scheduler(optimizer, cfg, total_steps: int) -> RunSchedule:
    validate_schedule(cfg, total_steps)
    momentum = None
    if cfg.get("momentum_warmup_steps"):
        momentum = MomentumWarmup(optimizer, float(cfg["momentum_warmup_start"]),
                                  int(cfg["momentum_warmup_steps"]))
    fn = partial(
        lr_multiplier,
        name=cfg.name,
        total_steps=total_steps,
        warmup_steps=warmup_steps(cfg, total_steps),
        min_lr_ratio=float(cfg.min_lr_ratio),
        decay_fraction=float(cfg.get("decay_fraction", 0.2)),
    )
    return RunSchedule(LambdaLR(optimizer, fn), momentum)
