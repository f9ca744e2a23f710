"""Mirror a run's numbers to Weights & Biases. Optional, and it never breaks a run.

- run id = run key and resume="allow": a requeued job continues the same W&B run;
- group = the sweep/table name (or task/optim when run alone); config = the resolved config;
- mode online / offline / disabled. Online without an API key falls back to offline instead of
  prompting; any failure of the client (no network, bad install) is a warning, never a crash.
The API key is read by the wandb client from its usual places; we never read or store it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from tasks.train import checks

LOGGERS = ("none", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
LOGGER_KEYS = {"none": ("name",),
               "wandb": ("name", "mode", "project", "entity", "tags", "init_timeout")}


def validate_logger(cfg: dict) -> None:
    """The `logger` section of a run config: a known logger, the keys it reads, a known mode."""
    if cfg.get("name") not in LOGGERS:
        raise ValueError(f"logger.name must be one of {list(LOGGERS)}, got {cfg.get('name')!r}")
    checks.known_keys("logger", cfg, LOGGER_KEYS[cfg["name"]])
    if cfg["name"] == "wandb" and cfg.get("mode") not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {list(WANDB_MODES)}, got "
                         f"{cfg.get('mode')!r}")


class NullMirror:
    def log(self, row: dict, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text() or "wandb" in netrc.read_text()
    except OSError:
        return False


class WandbMirror:
    def __init__(self, run):
        self.run = run

    def _safe(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # a mirror must never take the run down
            warnings.warn(f"wandb {what} failed ({e!r}); the local store is unaffected")

    def log(self, row: dict, step: int) -> None:
        self._safe("log", lambda: self.run.log(row, step=step))

    def summary(self, values: dict) -> None:
        self._safe("summary", lambda: self.run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        self._safe("finish", lambda: self.run.finish(exit_code=exit_code))


def start_mirror(logger_cfg, *, run_key: str, run_dir: Path, group: str, name: str, config: dict):
    if logger_cfg.name != "wandb" or logger_cfg.mode == "disabled":
        return NullMirror()
    mode = logger_cfg.mode
    if mode == "online" and not _has_api_key():
        warnings.warn("logger.mode=online but no W&B API key is configured: logging offline; "
                      "`wandb sync` the run later")
        mode = "offline"
    try:
        import wandb
    except Exception as e:
        warnings.warn(f"wandb does not import ({e!r}); continuing without W&B")
        return NullMirror()
    timeout = float(logger_cfg.get("init_timeout", 5))

    def init(mode: str):
        return wandb.init(project=logger_cfg.project, entity=logger_cfg.get("entity"),
                          id=run_key, resume="allow", group=group, name=name,
                          tags=list(logger_cfg.get("tags") or []), config=config,
                          dir=str(run_dir), mode=mode,
                          settings=wandb.Settings(init_timeout=timeout))

    try:
        return WandbMirror(init(mode))
    except Exception as e:
        if mode != "online":
            warnings.warn(f"wandb.init failed ({e!r}); continuing without W&B")
            return NullMirror()
        warnings.warn(f"wandb online init failed within {timeout:g}s ({e!r}): logging offline "
                      f"instead; `wandb sync {run_dir / 'wandb'}` once the network is back")
    try:
        wandb.teardown()  # the failed attempt still holds the run id in this process
        return WandbMirror(init("offline"))
    except Exception as e:
        warnings.warn(f"wandb offline init failed too ({e!r}); continuing without W&B")
        return NullMirror()
