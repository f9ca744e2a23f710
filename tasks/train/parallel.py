"""How a run is spread over a job's data-parallel tasks: the `parallel` config group
(conf/parallel/{ddp,fsdp}.yaml), read here and nowhere else. One check refuses what cannot run,
before a run dir or a job exists: an unknown sharding, and FSDP over a single process."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.train.errors import ConfigError

SHARDINGS = ("ddp", "fsdp")
CHECKPOINTS = ("sharded", "whole")
KEYS = ("sharding", "timeout_min", "checkpoint")


@dataclass(frozen=True)
class Parallel:
    sharding: str = "ddp"
    timeout_min: float = 30.0  # how long a collective (a barrier, a checkpoint's) may wait
    # how a sharded run checkpoints: each rank its shards (torch's distributed checkpoint), or
    # whole tensors gathered into one file by rank 0 (tasks/train/snapshot.py)
    checkpoint: str = "sharded"

    @property
    def fsdp(self) -> bool:
        return self.sharding == "fsdp"


def of(cfg) -> Parallel:
    """The run's parallel settings (a composed or resolved run config; DDP when absent)."""
    section = cfg.get("parallel") or {}
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise ConfigError(f"parallel.{unknown[0]} is not read by anything; the parallel group "
                          f"holds {list(KEYS)} (conf/parallel/)")
    sharding = section.get("sharding", "ddp")
    if sharding not in SHARDINGS:
        raise ConfigError(f"parallel.sharding must be one of {list(SHARDINGS)}, got "
                          f"{sharding!r} (choose parallel=ddp or parallel=fsdp)")
    timeout = section.get("timeout_min", Parallel.timeout_min)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or \
            not 0 < timeout < 10**6:
        raise ConfigError(f"parallel.timeout_min must be a number of minutes > 0, got "
                          f"{timeout!r}")
    how = section.get("checkpoint", Parallel.checkpoint)
    if how not in CHECKPOINTS:
        raise ConfigError(f"parallel.checkpoint must be one of {list(CHECKPOINTS)}, got "
                          f"{how!r}")
    return Parallel(sharding, float(timeout), how)


def check(cfg, world: int, how: str) -> Parallel:
    """The run's settings, refused where they cannot run on `world` processes; `how` says how
    the processes are started, for the message (the launcher's tasks, or torchrun)."""
    parallel = of(cfg)
    if parallel.fsdp and world == 1:
        raise ConfigError(f"parallel=fsdp shards over data-parallel processes, and {how} runs "
                          f"one; use more (launcher.tasks_per_node or launcher.nodes > 1, or "
                          f"`torchrun --nproc-per-node=N scripts/train.py ...` with N > 1), or "
                          f"parallel=ddp")
    return parallel
