"""What a SLURM job array asks for, from the plan of the runs it carries (sweeps/plan.py), so
that a table launched as typed gets the time and the memory its runs need:

    requeues   `launcher.max_requeues: auto` (the default): enough time-limit slots for the
               longest run's planned hours, at the pessimistic end of its range, × TIME_MARGIN
               (at least DEFAULT_REQUEUES, for preemptions); a number given that cannot hold
               the longest run is refused with the setting that can
    memory     `launcher.mem_gb: auto` (the default): what the largest run needs on a node, per
               task: the interpreter and CUDA context, the weights loaded through host memory,
               the whole checkpoint a resume loads (each rank loads it whole; a sharded
               checkpoint loads only the rank's share), the compile workers of a compiled run,
               and on a CPU the training state itself; a number given below that is refused
    GPU time   the plan times runs on `launcher.plan_gpu` (an H100 by default), the GPU the
               requeues are sized for

Nothing here submits: `resolve` returns the launcher settings with every `auto` replaced, and
the lines that say where each came from; a refusal is a ConfigError raised before any job
exists. CPU-only jobs (launcher.gpus_per_node=0) have no time estimate: auto gives them
DEFAULT_REQUEUES, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.train.errors import ConfigError

# Dense peaks (FLOP/s) for bf16 and for fp32 without TF32, memory (GB) and memory bandwidth
# (B/s), from the vendors' datasheets (SXM parts). V100 has no bf16: its fp16 tensor-core peak
# stands in.
GPUS = {
    "h100": (989e12, 67e12, 80, 3.35e12),
    "h200": (989e12, 67e12, 141, 4.8e12),
    "b200": (2250e12, 80e12, 180, 8.0e12),
    "a100": (312e12, 19.5e12, 80, 2.04e12),
    "a100-40gb": (312e12, 19.5e12, 40, 1.56e12),
    "l40s": (362e12, 91.6e12, 48, 0.864e12),
    "v100": (125e12, 15.7e12, 32, 0.9e12),
}

AUTO = "auto"
DEFAULT_REQUEUES = 5  # preemptions and node failures, on top of the planned time
MAX_AUTO_REQUEUES = 40  # beyond this a run wants a longer limit or more GPUs, not more slots
TIME_MARGIN = 1.2  # restarts, evaluation and checkpoints on top of the planned compute
HOST_BASE_GB = 4.0  # a task process before its weights: Python, torch, the CUDA context
HOST_MARGIN = 1.2  # [assumption] allocator slack, tokenized data, checkpoint writes
# [assumption] one inductor compile worker (a subprocess that imports torch and compiles one
# kernel's C++/Triton) holds about this much; a compiled run starts one per CPU, up to 32
COMPILE_WORKER_GB = 0.5
MAX_COMPILE_WORKERS = 32


@dataclass(frozen=True)
class HostNeed:
    """Host memory one task of a run needs, by part, in GB."""

    base: float
    weights_loaded: float  # pretrained weights read through host memory
    checkpoint: float  # what a resume loads into this task's memory
    compile_workers: float
    training_state: float  # weights, gradients, optimizer state, activations: CPU runs only

    @property
    def total(self) -> float:
        return (self.base + self.weights_loaded + self.checkpoint + self.compile_workers
                + self.training_state)

    def describe(self) -> str:
        parts = [("base", self.base), ("weights loaded", self.weights_loaded),
                 ("checkpoint load", self.checkpoint), ("compile workers", self.compile_workers),
                 ("training state on the CPU", self.training_state)]
        return " + ".join(f"{what} {gb:.1f}" for what, gb in parts if gb)


def host_need(plan, cfg: dict, launcher: dict) -> HostNeed:
    """The host memory one task of the run `plan` (a costed RunPlan of `cfg`) needs."""
    cost = plan.cost
    gpus = int(launcher.get("gpus_per_node") or 0)
    compiled = bool(cfg["task"].get("compile") or cfg["optim"].get("fused"))
    workers = min(int(launcher.get("cpus_per_task") or 1), MAX_COMPILE_WORKERS)
    return HostNeed(
        base=HOST_BASE_GB,
        weights_loaded=cost.host_bytes / 1e9,
        checkpoint=plan.checkpoint_gb_per_task,
        compile_workers=COMPILE_WORKER_GB * workers if compiled else 0.0,
        training_state=0.0 if gpus else plan.memory_gb)


def requeues_needed(hours: float, timeout_min: float) -> int:
    """Requeues after the first job for a run of `hours` in jobs of `timeout_min`."""
    return max(math.ceil(hours / (timeout_min / 60)) - 1, 0)


@dataclass(frozen=True)
class Resolved:
    launcher: dict  # the launcher settings with every `auto` replaced
    lines: tuple[str, ...]  # where each came from, for the plan and the launch to print


def resolve(launcher: dict, plans: list, cfgs: list[dict]) -> Resolved:
    """The SLURM settings for runs planned as `plans` (RunPlans of the configs `cfgs`, in the
    same order; invalid plans are skipped); raises ConfigError where a setting given cannot
    hold them. Other launchers pass through."""
    if launcher.get("name") != "slurm":
        return Resolved(dict(launcher), ())
    out, lines = dict(launcher), []
    valid = [(p, c) for p, c in zip(plans, cfgs, strict=True) if not p.error]
    gpus = int(launcher.get("gpus_per_node") or 0) * int(launcher.get("nodes") or 1)
    timeout = float(launcher["timeout_min"])
    given = launcher.get("max_requeues")
    if gpus and valid:
        longest = max(p.gpu_hours / gpus * TIME_MARGIN for p, _ in valid)
        needed = requeues_needed(longest, timeout)
        rule = (f"the longest run plans at {longest:.3g} h on {gpus} GPU(s) (pessimistic end, × "
                f"{TIME_MARGIN} for restarts and evaluation) in jobs of {timeout:g} min")
        if given == AUTO:
            if needed > MAX_AUTO_REQUEUES:
                raise ConfigError(
                    f"{rule}: that is {needed} requeues, more than the {MAX_AUTO_REQUEUES} "
                    f"launcher.max_requeues=auto gives. Fix: a longer launcher.timeout_min "
                    f"(the partition's limit allowing: "
                    f"{math.ceil(longest * 60 / (MAX_AUTO_REQUEUES + 1))} min or more), more "
                    f"GPUs a run, or launcher.max_requeues={needed} to accept it")
            out["max_requeues"] = max(needed, DEFAULT_REQUEUES)
            lines.append(f"time: launcher.max_requeues={out['max_requeues']} (auto: {rule} "
                         f"need {needed}; at least {DEFAULT_REQUEUES} for preemptions)")
        elif int(given) < needed:
            raise ConfigError(
                f"launcher.max_requeues={given} cannot finish the runs: {rule} need {needed} "
                f"requeues. Fix: launcher.max_requeues={needed} (or auto), or a longer "
                f"launcher.timeout_min")
        else:
            lines.append(f"time: launcher.max_requeues={given} holds every run ({rule} need "
                         f"{needed})")
    elif given == AUTO:
        out["max_requeues"] = DEFAULT_REQUEUES
        lines.append(f"time: launcher.max_requeues={DEFAULT_REQUEUES} (auto; "
                     + ("CPU jobs: the plan times GPU runs only)" if valid else
                        "no run could be planned)"))
    tasks = int(launcher.get("tasks_per_node") or 1)
    mem = launcher.get("mem_gb")
    if not valid:
        if mem == AUTO:
            out["mem_gb"] = None
            lines.append("host memory: the partition's default (auto, but no run could be "
                         "planned)")
        return Resolved(out, tuple(lines))
    needs = [(host_need(p, c, launcher), p) for p, c in valid]
    largest, plan = max(needs, key=lambda n: n[0].total)
    need_gb = math.ceil(largest.total * tasks * HOST_MARGIN)
    rule = (f"{tasks} task(s) a node × ({largest.describe()} GB, run {plan.key}) × "
            f"{HOST_MARGIN}")
    if mem == AUTO:
        out["mem_gb"] = need_gb
        lines.append(f"host memory: launcher.mem_gb={need_gb} (auto: {rule})")
    elif mem is None:
        lines.append(f"host memory: the partition's default (launcher.mem_gb=null); the runs "
                     f"need up to {need_gb} GB a node ({rule})")
    elif float(mem) < need_gb:
        raise ConfigError(f"launcher.mem_gb={mem} cannot hold runs that need {need_gb} GB a "
                          f"node ({rule}). Fix: launcher.mem_gb={need_gb} (or auto)")
    else:
        lines.append(f"host memory: launcher.mem_gb={mem} holds every run ({rule}: at most "
                     f"{need_gb} GB)")
    return Resolved(out, tuple(lines))


def check_values(launcher: dict) -> None:
    """`auto` or a number where resolve accepts one, and a GPU the plan knows (the launcher's
    own validation)."""
    if launcher.get("plan_gpu") not in GPUS:
        raise ConfigError(f"launcher.plan_gpu must be one of {sorted(GPUS)}, got "
                          f"{launcher.get('plan_gpu')!r}")
    for key, minimum in (("max_requeues", 0), ("mem_gb", 1)):
        value = launcher.get(key)
        if value is None and key == "mem_gb" or value == AUTO:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigError(f"launcher.{key} must be 'auto' or a number >= {minimum}"
                              + (" (or null: the partition's default)" if key == "mem_gb"
                                 else "") + f", got {value!r}")
