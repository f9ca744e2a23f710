"""Loss-spike, divergence and convergence metrics.

Two faces of the same definitions:
- pure functions on a whole loss curve (used by reports and by the tests), and
- `LossTracker`, the online version the training loop feeds one loss per step. Its state is
  small (an EMA, a window, counters) and goes into the checkpoint, so a resumed run reports
  exactly what an uninterrupted one would.

Definitions:
- EMA spike: after `warmup` steps, step t spikes when loss_t > (1 + delta) * EMA_{t-1}, with
  EMA_t = decay * EMA_{t-1} + (1 - decay) * loss_t and EMA_0 = loss_0. Consecutive spiking steps
  form one spike *event*: `spike_count` counts events, `spike_steps` counts steps, `spike_rate`
  = spike_steps / steps checked, `max_spike_ratio` = max over checked steps of loss_t / EMA_{t-1}.
- Sigma spike (OLMo-2 style score): share of steps whose loss is more than k standard deviations
  above the mean of the previous `window` losses (checked once a full window exists).
- Divergence: a non-finite loss, or a loss above `cap_factor` times the first loss.
- `auc_log_loss`: the area under ln(loss) per step, divided by the number of steps (a mean), so
  runs of equal length compare directly; lower is faster convergence.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class SpikeConfig:
    delta: float = 0.2
    ema_decay: float = 0.98
    warmup: int = 50
    sigma_window: int = 100
    sigma_k: float = 7.0
    cap_factor: float = 3.0

    def __post_init__(self):
        for key in ("delta", "ema_decay", "sigma_k", "cap_factor"):  # nan passes every <, >
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or not math.isfinite(value):
                raise ValueError(f"metrics.{key} must be a finite number, got {value!r}")
        for key in ("warmup", "sigma_window"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"metrics.{key} must be an integer, got {value!r}")
        if self.delta <= 0:
            raise ValueError(f"metrics.delta must be > 0, got {self.delta}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"metrics.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.warmup < 0:
            raise ValueError(f"metrics.warmup must be >= 0, got {self.warmup}")
        if self.sigma_window < 2:
            raise ValueError(f"metrics.sigma_window must be >= 2, got {self.sigma_window}")
        if self.cap_factor <= 1:
            raise ValueError(f"metrics.cap_factor must be > 1, got {self.cap_factor}")


# ---------------------------------------------------------------- pure functions on a curve


def ema_spike_steps(losses: Sequence[float], cfg: SpikeConfig = SpikeConfig()) -> list[int]:
    """Indices t (0-based) of the steps that spike under the EMA-ratio rule."""
    tracker = LossTracker(cfg)
    spikes = []
    for t, loss in enumerate(losses):
        if tracker.update(t, loss).ema_spike:
            spikes.append(t)
    return spikes


def count_events(spike_steps: Iterable[int]) -> int:
    """Number of maximal runs of consecutive steps in `spike_steps`."""
    events, last = 0, None
    for t in spike_steps:
        if last is None or t != last + 1:
            events += 1
        last = t
    return events


def sigma_spike_steps(losses: Sequence[float], window: int = 100, k: float = 7.0) -> list[int]:
    """Steps more than k std above the mean of the previous `window` losses (OLMo-2 style)."""
    out = []
    for t in range(window, len(losses)):
        prev = losses[t - window : t]
        mean = sum(prev) / window
        std = math.sqrt(sum((x - mean) ** 2 for x in prev) / window)
        if losses[t] > mean + k * std:
            out.append(t)
    return out


def auc_log_loss(losses: Sequence[float]) -> float:
    """Mean of ln(loss) over the steps (the area under the log-loss curve per step)."""
    if not losses:
        return float("nan")
    return sum(math.log(max(x, 1e-12)) for x in losses) / len(losses)


def first_at_target(
    evals: Sequence[tuple[int, float]], target: float | None, mode: str = "min"
) -> int | None:
    """First step whose evaluated metric reaches `target` (<= for mode min, >= for max)."""
    if target is None:
        return None
    if mode not in ("min", "max"):
        raise ValueError(f"target mode must be 'min' or 'max', got {mode!r}")
    for step, value in evals:
        if (value <= target) if mode == "min" else (value >= target):
            return step
    return None


# ---------------------------------------------------------------- online tracker


@dataclass
class StepVerdict:
    ema_spike: bool = False
    sigma_spike: bool = False
    diverged: bool = False
    reason: str = ""


MAX_RECORDED_EVENTS = 1000  # event steps kept for the figures; the count has no cap


class LossTracker:
    """Feeds on one training loss per step; keeps every metric of the curve up to date."""

    def __init__(self, cfg: SpikeConfig = SpikeConfig()):
        self.cfg = cfg
        self.steps_seen = 0
        self.initial_loss: float | None = None
        self.ema: float | None = None
        self.window: deque[float] = deque(maxlen=cfg.sigma_window)
        self.spike_steps = 0
        self.spike_events = 0
        self.checked_steps = 0
        self.max_spike_ratio = 0.0
        self.sigma_spikes = 0
        self.sigma_checked = 0
        self.sum_log_loss = 0.0
        self.last_spike_step: int | None = None
        self.spike_event_starts: list[int] = []  # first step of each event, for the figures
        self.last_loss: float | None = None
        self.best_loss = math.inf

    def update(self, step: int, loss: float) -> StepVerdict:
        verdict = StepVerdict()
        if not math.isfinite(loss):
            return StepVerdict(diverged=True, reason=f"non-finite loss {loss} at step {step}")
        if self.initial_loss is None:
            self.initial_loss = loss
        if loss > self.cfg.cap_factor * self.initial_loss:
            verdict.diverged = True
            verdict.reason = (
                f"loss {loss:.4g} at step {step} exceeds {self.cfg.cap_factor}x the initial "
                f"loss {self.initial_loss:.4g}"
            )
        if self.ema is not None and self.steps_seen >= self.cfg.warmup:
            ratio = loss / self.ema if self.ema > 0 else math.inf
            self.checked_steps += 1
            self.max_spike_ratio = max(self.max_spike_ratio, ratio)
            if ratio > 1.0 + self.cfg.delta:
                verdict.ema_spike = True
                self.spike_steps += 1
                if self.last_spike_step is None or step != self.last_spike_step + 1:
                    self.spike_events += 1
                    if len(self.spike_event_starts) < MAX_RECORDED_EVENTS:
                        self.spike_event_starts.append(step)
                self.last_spike_step = step
        if len(self.window) == self.cfg.sigma_window:
            mean = sum(self.window) / len(self.window)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.window) / len(self.window))
            self.sigma_checked += 1
            if loss > mean + self.cfg.sigma_k * std:
                verdict.sigma_spike = True
                self.sigma_spikes += 1
        self.ema = loss if self.ema is None else (
            self.cfg.ema_decay * self.ema + (1.0 - self.cfg.ema_decay) * loss
        )
        self.window.append(loss)
        self.sum_log_loss += math.log(max(loss, 1e-12))
        self.steps_seen += 1
        self.last_loss = loss
        self.best_loss = min(self.best_loss, loss)
        return verdict

    def summary(self) -> dict:
        n = self.steps_seen
        return {
            "spike_count": self.spike_events,
            "spike_event_starts": list(self.spike_event_starts),
            "spike_steps": self.spike_steps,
            "spike_rate": self.spike_steps / self.checked_steps if self.checked_steps else 0.0,
            "max_spike_ratio": self.max_spike_ratio,
            "sigma_spike_score": (
                self.sigma_spikes / self.sigma_checked if self.sigma_checked else 0.0
            ),
            "auc_log_loss": self.sum_log_loss / n if n else float("nan"),
            "final_train_loss": self.last_loss,
            "best_train_loss": self.best_loss if n else None,
            "initial_train_loss": self.initial_loss,
        }

    def state_dict(self) -> dict:
        state = {k: v for k, v in vars(self).items() if k not in ("cfg", "window")}
        state["window"] = list(self.window)
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k == "window":
                self.window = deque(v, maxlen=self.cfg.sigma_window)
            else:
                setattr(self, k, v)
