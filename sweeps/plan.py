"""Plan a table before anything trains: every run composed and validated, with its status, the
data it needs, its memory per GPU and its GPU-hours.

GPU-hours come from a stated model, printed with the plan:

    hours = (training FLOPs + eval FLOPs) / (MFU × the GPU's dense peak) / 3600

FLOPs are the task's own count (`Task.cost`: traced on the meta device, or 2N/4N/6N per token
for LoRA); the peak is the vendor's dense tensor-core number for the run's compute dtype (bf16,
or fp32 without TF32 for fp32 runs: torch's default matmul precision). MFU and GPU are
assumptions the user overrides (`--gpu a100 --mfu 0.35`, or `--peak-tflops 500`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_class

from sweeps.compose import check_run, compose_runs, compose_sweep
from sweeps.manifest import Manifest
from sweeps.spec import RowKey, Run, launcher_warnings
from sweeps.status import SlurmQueue, run_state
from tasks.train import identity, parallel
from tasks.train.base import Cost

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
DEFAULT_GPU, DEFAULT_MFU = "h100", 0.4
BANDWIDTH_USE = 0.6  # the share of peak bandwidth memory-bound decoding reaches [assumption]
DONE = ("completed", "diverged")


@dataclass
class RunPlan:
    row: str
    lr: float
    seed: int
    key: str
    state: str
    cost: Cost | None
    memory_gb: float | None
    gpu_hours: float | None
    error: str = ""
    path: str = ""  # which code computes the optimizer's steps (`optimizer_path`)


@dataclass
class Hardware:
    gpu: str
    mfu: float
    peak_override: float | None = None  # FLOP/s

    def __post_init__(self):
        if self.gpu not in GPUS:
            raise ValueError(f"--gpu must be one of {sorted(GPUS)}, got {self.gpu!r}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"--mfu must be in (0, 1], got {self.mfu}")
        if self.peak_override is not None and self.peak_override <= 0:
            raise ValueError(f"--peak-tflops must be > 0, got {self.peak_override / 1e12:g}")

    def peak(self, compute: str) -> float:
        if self.peak_override is not None:
            return self.peak_override
        bf16, fp32, _, _ = GPUS[self.gpu]
        return bf16 if compute == "bf16" else fp32

    @property
    def bandwidth(self) -> float:
        return GPUS[self.gpu][3]

    @property
    def memory_gb(self) -> float:
        return GPUS[self.gpu][2]

    def describe(self) -> str:
        peak = (f"{self.peak_override / 1e12:g} TFLOP/s (given)" if self.peak_override else
                f"{GPUS[self.gpu][0] / 1e12:g} TFLOP/s bf16, {GPUS[self.gpu][1] / 1e12:g} "
                f"fp32")
        return (f"GPU-hours = FLOPs / ({self.mfu:g} MFU × {self.gpu} peak: {peak}) + bytes "
                f"read by decoding / ({BANDWIDTH_USE:g} × {self.bandwidth / 1e12:g} TB/s); "
                f"assumed, override with --gpu {{{','.join(sorted(GPUS))}}} --mfu X "
                f"--peak-tflops Y")


def optimizer_path(optim_cfg: dict) -> str:
    """Which code computes the run's optimizer steps: `compiled` (optim.fused=true, one
    torch.compile'd pass a tensor: the paper scales' default), `foreach` or `kernel` (our
    elementwise optimizers uncompiled), `matrix` (the Muon family's Newton–Schulz), `torch`
    (torch.optim's own)."""
    cls = get_class(optim_cfg["_target_"])
    if not cls.__module__.startswith("optim."):
        return "torch"
    if not hasattr(cls, "has_foreach_path"):
        return "matrix"
    if optim_cfg.get("fused"):
        return "compiled"
    return "foreach" if cls.has_foreach_path() else "kernel"


def state_buffers(optim_cfg: dict) -> int:
    """fp32 state buffers per trained parameter of the run's optimizer, from the registry (2,
    as Adam, for one not listed); the Muon family's aux AdamW counts as its main update. The
    planner owns this: the tasks that report memory know nothing of optimizers."""
    from optim import STATE_BUFFERS  # imports torch: only where a plan is made

    name = str(optim_cfg.get("_target_", "")).rsplit(".", 1)[-1]
    return STATE_BUFFERS.get(name, 2)


def _cost_key(cfg: dict) -> str:
    """Runs that differ only in the optimizer, lr or seed share one traced cost."""
    shared = {k: v for k, v in cfg.items()
              if k not in ("optim", "seed", "sweep", "runs_root", "launcher", "logger")}
    return json.dumps(shared, sort_keys=True, default=str)


class Planner:
    def __init__(self, hardware: Hardware):
        self.hardware = hardware
        self._costs: dict[str, Cost | Exception] = {}

    def cost(self, cfg: dict) -> Cost:
        key = _cost_key(cfg)
        if key not in self._costs:
            try:
                self._costs[key] = get_class(cfg["task"]["_target_"]).cost(cfg)
            except Exception as e:  # a bad task value: every run with it is invalid
                self._costs[key] = e
        cost = self._costs[key]
        if isinstance(cost, Exception):
            raise cost
        return cost

    def plan_run(self, row: str, lr: float, seed: int, key: str, state: str,
                 cfg: dict) -> RunPlan:
        cost = self.cost(cfg)
        memory = {**cost.memory_bytes,  # + the state of this run's optimizer
                  "optimizer_state": cost.trained_params * 4.0 * state_buffers(cfg["optim"])}
        launcher = cfg.get("launcher") or {}
        if parallel.of(cfg).fsdp:  # each rank holds 1/world of what is sharded
            world = int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)
            memory.update({k: memory[k] / world
                           for k in ("weights", "gradients", "optimizer_state")})
        hours = ((cost.train_flops + cost.eval_flops)
                 / (self.hardware.mfu * self.hardware.peak(cost.compute))
                 + cost.eval_bytes_read / (BANDWIDTH_USE * self.hardware.bandwidth)) / 3600
        return RunPlan(row, lr, seed, key, state, cost, sum(memory.values()) / 1e9, hours,
                       path=optimizer_path(cfg["optim"]))


def _fmt_hours(h: float | None) -> str:
    if h is None:
        return "–"
    return f"{h:.3g}" if h >= 0.01 else "<0.01"


TIME_MARGIN = 1.2  # restarts, evaluation and checkpoints on top of the planned compute


def time_allowance(launcher: dict) -> tuple[float, int, int] | None:
    """(hours one run may take, GPUs it trains on, requeues) under the launcher's time limit
    and requeues; None where the launcher sets no limit (debug)."""
    if launcher.get("name") == "debug" or not launcher.get("timeout_min"):
        return None
    requeues = int(launcher.get("max_requeues") or 0)
    gpus = max(int(launcher.get("gpus_per_node") or 0), 1) * int(launcher.get("nodes") or 1)
    return launcher["timeout_min"] / 60 * (requeues + 1), gpus, requeues


def time_check(plans: list, launcher: dict) -> list[str]:
    """Whether every run's planned hours (with a margin) fit its time limit × (requeues + 1),
    and the launcher settings that would make the longest one fit."""
    allowance = time_allowance(launcher)
    valid = [p for p in plans if not p.error and p.gpu_hours is not None]
    if allowance is None or not valid:
        return []
    hours, gpus, requeues = allowance
    need = {p.key: p.gpu_hours / gpus * TIME_MARGIN for p in valid}
    late = [p for p in valid if need[p.key] > hours]
    rule = (f"{launcher['timeout_min']} min × ({requeues} requeues + 1) = {hours:.3g} h a run "
            f"on {gpus} GPU(s); planned hours × {TIME_MARGIN} for restarts and evaluation")
    if not late:
        return [f"time: every run fits its allowance ({rule})"]
    longest = max(need[p.key] for p in late)
    slots = math.ceil(longest / (launcher["timeout_min"] / 60))
    return [f"time: {len(late)} run(s) CANNOT FINISH within {rule}; the longest needs "
            f"{longest:.3g} h. Fix: launcher.max_requeues={slots - 1}, or a longer "
            f"launcher.timeout_min (the partition's limit allowing), or more GPUs a run"]


HOST_BASE_GB = 4.0  # a task process before its weights: Python, torch, the CUDA context
HOST_MARGIN = 1.2  # [assumption] allocator slack, tokenized data, checkpoint writes


def host_check(plans: list, launcher: dict) -> list[str]:
    """Whether a SLURM node's memory (launcher.mem_gb, per node) holds its tasks: each needs
    HOST_BASE_GB plus what its run loads through host memory (pretrained weights), × 1.2."""
    valid = [p for p in plans if not p.error]
    if launcher.get("name") != "slurm" or not valid:
        return []
    tasks = int(launcher.get("tasks_per_node") or 1)
    need = math.ceil(max((HOST_BASE_GB + p.cost.host_bytes / 1e9) * tasks * HOST_MARGIN
                         for p in valid))
    have = launcher.get("mem_gb")
    rule = (f"{tasks} task(s) a node × ({HOST_BASE_GB:g} GB + weights loaded through host "
            f"memory) × {HOST_MARGIN}")
    if have is None:
        return [f"host memory: runs need up to {need} GB a node ({rule}); launcher.mem_gb=null "
                f"leaves it to the partition's default. Set launcher.mem_gb={need}"]
    if have < need:
        return [f"host memory: launcher.mem_gb={have} CANNOT HOLD runs that need {need} GB a "
                f"node ({rule}). Fix: launcher.mem_gb={need}"]
    return [f"host memory: launcher.mem_gb={have} holds every run ({rule}: at most {need} GB)"]


def format_plan(name: str, plans: list[RunPlan], hardware: Hardware, launcher: dict) -> str:
    lines = [f"plan {name}: {len(plans)} runs", hardware.describe(),
             f"launcher: {launcher.get('name')}"
             + (f", {launcher.get('gpus_per_node')} GPU(s) per node, "
                f"{launcher.get('tasks_per_node')} task(s) per node"
                if launcher.get("name") != "debug" else " (in this process)"), "",
             f"{'row':<28} {'lr':>8} {'seed':>4}  {'run key':<10}  {'status':<11} "
             f"{'GPU-h':>8} {'GB/GPU':>7}  {'path':<9} data"]
    for p in plans:
        if p.error:
            lines.append(f"{p.row[:28]:<28} {p.lr:>8.3g} {p.seed:>4}  {p.key:<10}  "
                         f"{'INVALID':<11} {p.error}")
            continue
        data = ", ".join(d.name + (" ✓" if d.ready else " MISSING") for d in p.cost.data)
        lines.append(f"{p.row[:28]:<28} {p.lr:>8.3g} {p.seed:>4}  {p.key:<10}  {p.state:<11} "
                     f"{_fmt_hours(p.gpu_hours):>8} {p.memory_gb:>7.1f}  {p.path:<9} {data}")
    valid = [p for p in plans if not p.error]
    todo = [p for p in valid if p.state not in DONE]
    lines.append("")
    for basis, compute in dict.fromkeys((p.cost.basis, p.cost.compute) for p in valid):
        lines.append(f"cost basis: {basis}; {compute} matmuls")
    counts = {s: sum(p.state == s for p in plans) for s in dict.fromkeys(p.state for p in plans)}
    lines.append("status: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    total = sum(p.gpu_hours for p in valid)
    lines.append(f"total: {_fmt_hours(total)} GPU-hours for all {len(valid)} valid runs; "
                 f"{_fmt_hours(sum(p.gpu_hours for p in todo))} for the {len(todo)} not done")
    paths = {}
    for p in valid:
        paths.setdefault(p.path, set()).add(p.row.split(" ")[0])
    lines.append("optimizer paths: " + "; ".join(
        f"{path} ({', '.join(sorted(rows))})" for path, rows in sorted(paths.items()))
        + (". compiled = optim.fused=true (a paper scale's default): one torch.compile'd pass "
           "a tensor, Triton on a GPU, C++ on a CPU; a node without either runs the default "
           "path instead, saying so" if "compiled" in paths else ""))
    lines += time_check(plans, launcher)
    lines += host_check(plans, launcher)
    if valid:
        peak_mem = max(p.memory_gb for p in valid)
        fits = peak_mem <= hardware.memory_gb
        lines.append(f"memory: at most {peak_mem:.1f} GB per GPU "
                     + ("(fits" if fits else "(DOES NOT FIT")
                     + f" a {hardware.gpu} with {hardware.memory_gb} GB; weights + gradients + "
                       f"optimizer state (each / world under parallel=fsdp) + one "
                       f"micro-batch's activations, an upper bound on activations)")
    missing = {d.prepare: d for p in valid for d in p.cost.data if not d.ready}
    if missing:
        lines += ["", "data to prepare first:"]
        lines += [f"  {cmd}    # {d.name} → {d.path}" for cmd, d in missing.items()]
    else:
        lines.append("data: everything these runs read is prepared here")
    invalid = [p for p in plans if p.error]
    if invalid:
        lines += ["", f"{len(invalid)} invalid run(s); the first: run key {invalid[0].key}: "
                      f"{invalid[0].error}"]
    return "\n".join(lines)


def plan_sweep(name: str, overrides: list[str], hardware: Hardware) -> tuple[str, int]:
    """The plan of `sweep.py launch NAME OVERRIDES`: what each run needs, nothing submitted."""
    runs = [Run(RowKey(f"{cfg['task']['name']}/{cfg['optim']['name']}"),
                cfg["optim"].get("lr", math.nan), cfg["seed"], tuple(run_overrides))
            for run_overrides, cfg in compose_sweep(overrides, validate_runs=False)]
    return plan_table(name, "sweep", runs, hardware)


def plan_table(name: str, scale: str, runs: list, hardware: Hardware,
               extra_conf: tuple[Path, ...] = ()) -> tuple[str, int]:
    """(the printed plan, number of invalid runs) of a table's runs (`sweeps.spec.Run`s);
    writes nothing and trains nothing."""
    composed = compose_runs([list(r.overrides) for r in runs], validate_runs=False,
                            extra_conf=extra_conf)
    launcher = composed[0][1]["launcher"]
    runs_root = Path(composed[0][1]["runs_root"]).expanduser().absolute()
    record = Manifest.load_or_new(runs_root, name)
    planner, queue, accepted = Planner(hardware), SlurmQueue(), set()
    plans = []
    for run, (overrides, cfg) in zip(runs, composed):
        key = identity.run_key(cfg)
        try:
            check_run(overrides, cfg, accepted=accepted)
            state = run_state(identity.run_dir(cfg, key), record.last_job(key), queue).name
            plans.append(planner.plan_run(run.row.label, run.lr, run.seed, key, state, cfg))
        except Exception as e:  # the plan reports every invalid run
            plans.append(RunPlan(run.row.label, run.lr, run.seed, key, "invalid", None, None, None,
                                 error=f"{type(e).__name__}: {e}"))
    text = "\n".join([*launcher_warnings(scale, launcher),
                      format_plan(name, plans, hardware, launcher)])
    return text, sum(bool(p.error) for p in plans)
