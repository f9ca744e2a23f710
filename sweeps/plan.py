"""Plan a table before anything trains: every run composed and validated, with its status, the
data it needs, its memory per GPU and its GPU-hours.

GPU-hours come from a stated model, printed with the plan:

    hours = (training FLOPs + eval FLOPs) / (MFU × the GPU's dense peak) / 3600

FLOPs are the task's own count (`Task.cost`: traced on the meta device, or 2N/4N/6N per token
for LoRA); the peak is the vendor's dense tensor-core number for the run's compute dtype (bf16,
or fp32 without TF32 for fp32 runs: torch's default matmul precision). MFU is a range per kind
of task (`Cost.mfu`: a GPT near 40%, a ResNet or ViT near 10%, each an assumption its task
states), so hours are a range; where scripts/gpu_check.py measured a task's MFU on the GPU
planned for (results/bench/gpu_check_cuda.json), the measured number replaces the assumption.
The user overrides GPU and MFU (`--gpu a100 --mfu 0.35`, or `--peak-tflops 500`).

The SLURM settings a launch takes from the plan (requeues, host memory) are sweeps/resources.py's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_class

from sweeps import resources
from sweeps.compose import check_run, compose_runs, compose_sweep
from sweeps.manifest import Manifest
from sweeps.resources import GPUS
from sweeps.spec import RowKey, Run, launcher_warnings
from sweeps.status import SlurmQueue, run_state
from tasks.train import identity, parallel
from tasks.train.base import Cost
from tasks.train.errors import ConfigError

DEFAULT_GPU = "h100"
# (low, high) share of the GPU's dense peak a run of each task reaches, so the plan's hours are
# a range; every entry is an assumption until scripts/gpu_check.py measures the task on the
# GPU planned for (its measured numbers then replace the entry). Keyed by the task's class.
MFU = {
    # nanoGPT's GPT-2 124M reaches ~40% on an A100 with torch.compile and flash attention
    # (its README); emulated fp8 and small widths less [assumption]
    "NanoGPTTask": (0.25, 0.45),
    # ResNet-50 and ViT training on an H100 run near 8–10% of the bf16 peak: convolutions,
    # normalisation and the input pipeline, not matmuls, set the pace [assumption]
    "ImageTask": (0.06, 0.12),
    "CifarTask": (0.02, 0.08),  # a CIFAR ResNet at batch 128 is launch-bound [assumption]
    # HF + PEFT fine-tuning of a 7B model, unpacked sequences, frozen base [assumption]
    "LoraMathTask": (0.2, 0.4),
    "GraphTask": (0.005, 0.05),  # small sparse GNNs: gathers and launches [assumption]
    # toy problems (deep linear nets, an MLP, a nonsmooth objective): the GPU mostly idles
    "DeepLinearTask": (0.001, 0.05), "MnistMLPTask": (0.001, 0.05),
    "NonSmoothTask": (0.001, 0.05),
}
UNSTATED_MFU = (0.05, 0.45)  # a task this table does not know (yours): a wide range, labelled
MEASURED = Path(__file__).resolve().parent.parent / "results" / "bench" / "gpu_check_cuda.json"
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
    gpu_hours: float | None  # the pessimistic end (the low MFU): what time limits are sized for
    error: str = ""
    path: str = ""  # which code computes the optimizer's steps (`optimizer_path`)
    gpu_hours_low: float | None = None  # the optimistic end (the high MFU)
    checkpoint_gb_per_task: float = 0.0  # what a resume loads into one task's host memory
    mfu: str = ""  # the MFU range its hours assume, and where it comes from


@dataclass
class Hardware:
    gpu: str
    mfu: float | None = None  # None: each task's own range (or what gpu_check measured)
    peak_override: float | None = None  # FLOP/s
    measured: Path = MEASURED  # scripts/gpu_check.py's report, where one was committed

    def __post_init__(self):
        if self.gpu not in GPUS:
            raise ValueError(f"--gpu must be one of {sorted(GPUS)}, got {self.gpu!r}")
        if self.mfu is not None and not 0 < self.mfu <= 1:
            raise ValueError(f"--mfu must be in (0, 1], got {self.mfu}")
        if self.peak_override is not None and self.peak_override <= 0:
            raise ValueError(f"--peak-tflops must be > 0, got {self.peak_override / 1e12:g}")
        self.measured_mfu = measured_mfu(self.measured, self.gpu)

    def peak(self, compute: str) -> float:
        if self.peak_override is not None:
            return self.peak_override
        bf16, fp32, _, _ = GPUS[self.gpu]
        return bf16 if compute == "bf16" else fp32

    def mfu_range(self, task_target: str) -> tuple[tuple[float, float], str]:
        """((low, high) MFU, where it comes from) for a run of this task: --mfu, else
        measured, else MFU's entry, else UNSTATED_MFU."""
        if self.mfu is not None:
            return (self.mfu, self.mfu), "given"
        if task_target in self.measured_mfu:
            return self.measured_mfu[task_target], f"measured, {self.measured.name}"
        name = task_target.rsplit(".", 1)[-1]
        if name in MFU:
            return MFU[name], "assumed"
        return UNSTATED_MFU, "assumed: no range stated for this task"

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
        mfu = (f"{self.mfu:g} MFU (given)" if self.mfu is not None else
               "MFU per task, a range (sweeps/plan.py MFU; hours low–high)")
        measured = "".join(f"; measured MFU {lo:.3g}–{hi:.3g} for {t.rsplit('.', 1)[-1]} "
                           f"({self.measured.name})"
                           for t, (lo, hi) in sorted(self.measured_mfu.items())
                           if self.mfu is None)
        return (f"GPU-hours = FLOPs / ({mfu} × {self.gpu} peak: {peak}) + bytes read by "
                f"decoding / ({BANDWIDTH_USE:g} × {self.bandwidth / 1e12:g} TB/s){measured}; "
                f"assumed, override with --gpu {{{','.join(sorted(GPUS))}}} --mfu X "
                f"--peak-tflops Y")


def measured_mfu(path: Path, gpu: str) -> dict[str, tuple[float, float]]:
    """Task target → (lowest, highest) MFU scripts/gpu_check.py measured on a GPU of the kind
    `gpu`, from its report at `path` ({} where there is none, or it ran on another GPU)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    device = str((report.get("provenance") or {}).get("device", "")).lower()
    if gpu.replace("-", " ") not in device:
        return {}
    seen: dict[str, list[float]] = {}
    for cell in (report.get("cells") or {}).values():
        mfu, target = cell.get("mfu_vs_vendor_bf16_peak"), cell.get("task_target")
        if isinstance(mfu, (int, float)) and 0 < mfu <= 1 and target:
            seen.setdefault(target, []).append(float(mfu))
    return {t: (min(v), max(v)) for t, v in seen.items()}


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
        optimizer_state = cost.trained_params * 4.0 * state_buffers(cfg["optim"])
        memory = {**cost.memory_bytes,  # + the state of this run's optimizer
                  "optimizer_state": optimizer_state}
        launcher = cfg.get("launcher") or {}
        world = int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)
        sharded = parallel.of(cfg).fsdp
        if sharded:  # each rank holds 1/world of what is sharded
            memory.update({k: memory[k] / world
                           for k in ("weights", "gradients", "optimizer_state")})
        task = get_class(cfg["task"]["_target_"])
        # a checkpoint holds fp32 weights (the trained ones only, for LoRA) and the optimizer
        # state; every task loads it whole on resume, a sharded run its own share
        saved = cost.trained_params if task.checkpoint_trainable_only else cost.params
        checkpoint = (4.0 * saved + optimizer_state) / (world if sharded else 1)
        (low, high), source = self.hardware.mfu_range(cfg["task"]["_target_"])
        decode = cost.eval_bytes_read / (BANDWIDTH_USE * self.hardware.bandwidth)
        flops = cost.train_flops + cost.eval_flops
        peak = self.hardware.peak(cost.compute)
        return RunPlan(row, lr, seed, key, state, cost, sum(memory.values()) / 1e9,
                       (flops / (low * peak) + decode) / 3600, path=optimizer_path(cfg["optim"]),
                       gpu_hours_low=(flops / (high * peak) + decode) / 3600,
                       checkpoint_gb_per_task=checkpoint / 1e9,
                       mfu=f"{task.__name__} {low:.3g}" + (f"–{high:.3g}" if high != low else "")
                       + f" ({source})")


def _fmt_hours(h: float | None) -> str:
    if h is None:
        return "–"
    return f"{h:.3g}" if h >= 0.01 else "<0.01"


def _fmt_range(low: float | None, high: float | None) -> str:
    """'low–high', or one number where both read the same."""
    if low is None or _fmt_hours(low) == _fmt_hours(high):
        return _fmt_hours(high)
    return f"{_fmt_hours(low)}–{_fmt_hours(high)}"


def resource_lines(plans: list[RunPlan], cfgs: list[dict], launcher: dict) -> list[str]:
    """What a launch would ask SLURM for (sweeps/resources.py), or why it would refuse."""
    try:
        resolved = resources.resolve(launcher, plans, cfgs)
    except ConfigError as e:
        return [f"REFUSED at launch: {e}"]
    if launcher.get("name") != "slurm":
        return []
    la = resolved.launcher
    header = (f"sbatch: --nodes={la.get('nodes')} --ntasks-per-node={la.get('tasks_per_node')} "
              f"--gpus-per-node={la.get('gpus_per_node')} "
              f"--cpus-per-task={la.get('cpus_per_task')} "
              + (f"--mem={la['mem_gb']}GB " if la.get("mem_gb") else "")
              + f"--time={la.get('timeout_min')} (min), requeued up to {la.get('max_requeues')} "
                f"times")
    return [*resolved.lines, header]


def format_plan(name: str, plans: list[RunPlan], hardware: Hardware, launcher: dict,
                cfgs: list[dict]) -> str:
    lines = [f"plan {name}: {len(plans)} runs", hardware.describe(),
             f"launcher: {launcher.get('name')}"
             + (f", {launcher.get('gpus_per_node')} GPU(s) per node, "
                f"{launcher.get('tasks_per_node')} task(s) per node"
                if launcher.get("name") != "debug" else " (in this process)"), "",
             f"{'row':<28} {'lr':>8} {'seed':>4}  {'run key':<10}  {'status':<11} "
             f"{'GPU-h':>11} {'GB/GPU':>7}  {'path':<9} data"]
    for p in plans:
        if p.error:
            lines.append(f"{p.row[:28]:<28} {p.lr:>8.3g} {p.seed:>4}  {p.key:<10}  "
                         f"{'INVALID':<11} {p.error}")
            continue
        data = ", ".join(d.name + (" ✓" if d.ready else " MISSING") for d in p.cost.data)
        lines.append(f"{p.row[:28]:<28} {p.lr:>8.3g} {p.seed:>4}  {p.key:<10}  {p.state:<11} "
                     f"{_fmt_range(p.gpu_hours_low, p.gpu_hours):>11} {p.memory_gb:>7.1f}  "
                     f"{p.path:<9} {data}")
    valid = [p for p in plans if not p.error]
    todo = [p for p in valid if p.state not in DONE]
    lines.append("")
    for basis, compute in dict.fromkeys((p.cost.basis, p.cost.compute) for p in valid):
        lines.append(f"cost basis: {basis}; {compute} matmuls")
    if valid:
        lines.append("MFU: " + "; ".join(dict.fromkeys(p.mfu for p in valid)))
    counts = {s: sum(p.state == s for p in plans) for s in dict.fromkeys(p.state for p in plans)}
    lines.append("status: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    def hours(of):
        return _fmt_range(sum(p.gpu_hours_low for p in of), sum(p.gpu_hours for p in of))

    lines.append(f"total: {hours(valid)} GPU-hours for all {len(valid)} valid runs; "
                 f"{hours(todo)} for the {len(todo)} not done")
    paths = {}
    for p in valid:
        paths.setdefault(p.path, set()).add(p.row.split(" ")[0])
    lines.append("optimizer paths: " + "; ".join(
        f"{path} ({', '.join(sorted(rows))})" for path, rows in sorted(paths.items()))
        + (". compiled = optim.fused=true (a paper scale's default): one torch.compile'd pass "
           "a tensor, Triton on a GPU, C++ on a CPU; a node without either runs the default "
           "path instead, saying so" if "compiled" in paths else ""))
    lines += resource_lines(plans, cfgs, launcher)
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
                      format_plan(name, plans, hardware, launcher,
                                  [cfg for _, cfg in composed])])
    return text, sum(bool(p.error) for p in plans)
