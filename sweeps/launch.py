"""Send a sweep's runs to SLURM (or local processes) as ONE submitit job array, resumably.

    launch(name, overrides) → compose + validate every run → skip finished and live runs →
    submit the rest as one array (non-blocking) → record it in the sweep's manifest.

Launchers (conf/launcher/*.yaml): `slurm` (sbatch array with a parallelism cap, USR1 before
the time limit, requeue), `local` (submitit's local processes), `debug` (in this process).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
from omegaconf import DictConfig, OmegaConf

from sweeps import manifest, resources
from sweeps.compose import check_run, compose_runs, compose_sweep
from sweeps.job import TrainJob
from sweeps.status import RunState, SlurmQueue, run_state
from tasks.train import checks, identity, parallel, store
from tasks.train.errors import ConfigError
from tasks.train.lease import Lease

LAUNCHERS = ("slurm", "local", "debug")
# What make_executor reads of conf/launcher/<name>.yaml
LAUNCHER_KEYS = {
    "debug": ("name",),
    "local": ("name", "timeout_min", "tasks_per_node", "gpus_per_node"),
    "slurm": ("name", "partition", "account", "qos", "constraint", "exclude", "gres",
              "timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task",
              "mem_gb", "array_parallelism", "signal_delay_s", "max_requeues", "plan_gpu",
              "job_name", "setup", "additional_parameters"),
}


def validate_launcher(launcher: dict) -> None:
    """A known launcher, and only keys it reads (`+launcher.reservation=...` is not one)."""
    if launcher.get("name") not in LAUNCHERS:
        raise ConfigError(f"launcher.name must be one of {list(LAUNCHERS)}, got "
                          f"{launcher.get('name')!r}")
    try:
        checks.known_keys("launcher", launcher, LAUNCHER_KEYS[launcher["name"]])
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if launcher["name"] == "slurm":
        resources.check_values(launcher)


def check_sharding(sharding: str, optimizer_targets) -> None:
    """Under fsdp every run's optimizer can update shards."""
    from hydra.utils import get_class

    from tasks.train import sharding_rules  # imports torch: only where a sweep is launched

    for target in sorted(set(optimizer_targets)):
        sharding_rules.check(sharding, get_class(target))


def check_topology(launcher: dict, grad_accums) -> None:
    """The data-parallel layout a job asks for can run: one task per GPU, and every run's
    grad_accum split evenly over the world (nodes × tasks per node). Checked before anything is
    submitted, not in the job."""
    tasks = int(launcher.get("tasks_per_node") or 1)
    gpus = int(launcher.get("gpus_per_node") or 0)
    world = tasks * int(launcher.get("nodes") or 1)
    if gpus and tasks != gpus:
        raise ConfigError(f"launcher.tasks_per_node ({tasks}) must equal launcher.gpus_per_node "
                          f"({gpus}): each data-parallel task trains on one GPU")
    bad = sorted({ga for ga in grad_accums if ga % world})
    if bad:
        raise ConfigError(f"grad_accum {bad} is not a multiple of the data-parallel world "
                          f"({world} = launcher.nodes × launcher.tasks_per_node): each step's "
                          f"micro-batches are split evenly between the tasks")


@dataclass
class Launch:
    name: str
    runs: list[tuple[list[str], dict]]  # every run of the sweep: overrides, resolved config
    submitted: list[str]  # run keys sent out by this launch
    skipped: dict[str, str]  # run key → why not (completed, diverged, running, pending,
    #                          corrupt, unknown)
    job_ids: list[str]
    executor: submitit.Executor | None
    jobs: list  # submitit jobs of this launch


def _absolute_paths(cfg: dict, sweep_name: str) -> dict:
    """Jobs may start in another directory: pin the paths, and name the sweep (W&B group)."""
    cfg["runs_root"] = str(Path(cfg["runs_root"]).expanduser().absolute())
    cfg["data_root"] = str(Path(cfg["data_root"]).expanduser().absolute())
    cfg["sweep"] = sweep_name
    return cfg


def make_executor(launcher: DictConfig, folder: Path) -> submitit.Executor:
    kind = launcher.name
    if kind not in LAUNCHERS:
        raise ValueError(f"launcher.name must be one of {list(LAUNCHERS)}, got {kind!r}")
    if kind == "debug":
        executor = submitit.DebugExecutor(folder=folder)
    elif kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=launcher.timeout_min,
                                   tasks_per_node=launcher.tasks_per_node,
                                   visible_gpus=tuple(range(launcher.gpus_per_node)))
    else:
        unresolved = [k for k in ("max_requeues", "mem_gb") if launcher.get(k) == resources.AUTO]
        if unresolved:  # a programming error: the launch resolves them from the plan first
            raise ValueError(f"launcher {unresolved} still 'auto': resolve them from the runs' "
                             f"plan first (sweeps/resources.py resolve)")
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=launcher.max_requeues)
        params = {
            "time": launcher.timeout_min,
            "partition": launcher.partition,
            "nodes": launcher.nodes,
            "ntasks_per_node": launcher.tasks_per_node,
            "cpus_per_task": launcher.cpus_per_task,
            "gpus_per_node": launcher.gpus_per_node or None,
            "mem": f"{launcher.mem_gb}GB" if launcher.mem_gb else None,
            "account": launcher.account,
            "qos": launcher.qos,
            "constraint": launcher.constraint,
            "exclude": launcher.exclude,
            "gres": launcher.gres,
            "array_parallelism": launcher.array_parallelism,
            "signal_delay_s": launcher.signal_delay_s,
            "setup": list(launcher.setup or []),
            "job_name": launcher.job_name,
            "additional_parameters": dict(launcher.additional_parameters or {}),
        }
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def launch(name: str, overrides: list[str] = (), extra: list[str] = (), dry_run: bool = False,
           runs: list[list[str]] | None = None, extra_conf: tuple[Path, ...] = ()) -> Launch:
    """Launch a sweep given in Hydra sweep syntax (`overrides`) or as explicit `runs` (one
    override list each, e.g. a table's grid); `extra_conf`: config folders searched after
    conf/ (a contender's optimizer config)."""
    # Compose every run first; validate those that will be submitted (finished and live runs
    # were validated when they went out), all before anything is submitted.
    if runs is not None:
        runs = compose_runs([[*extra, *r] for r in runs], validate_runs=False,
                            extra_conf=extra_conf)
    else:
        runs = compose_sweep(overrides, extra, validate_runs=False)
    runs = [(ov, _absolute_paths(cfg, name)) for ov, cfg in runs]
    launcher = runs[0][1]["launcher"]
    if any(cfg["launcher"] != launcher for _, cfg in runs):
        raise ValueError("every run of a sweep must use the same launcher settings")
    validate_launcher(launcher)
    check_topology(launcher, [cfg["grad_accum"] for _, cfg in runs])
    world = int(launcher.get("tasks_per_node") or 1) * int(launcher.get("nodes") or 1)
    how = {parallel.check(cfg, world, f"launcher={launcher['name']} (launcher.nodes × "
                                      f"launcher.tasks_per_node = {world})").sharding
           for _, cfg in runs}
    for sharding in sorted(how):
        check_sharding(sharding, [cfg["optim"]["_target_"] for _, cfg in runs
                                  if parallel.of(cfg).sharding == sharding])
    launcher = OmegaConf.create(launcher)

    root = Path(runs[0][1]["runs_root"])
    manifest.check_name(name)
    if dry_run:  # reads only
        return _submit(name, runs, launcher, root, dry_run)
    store.make_runs_root(root)  # private: submitit's job pickles live under it
    # one launch of a sweep at a time: two at once would submit the same runs twice
    with Lease(root / "_sweeps" / f"{name}.lease", f"sweep {name!r} (being launched)"):
        return _submit(name, runs, launcher, root, dry_run)


def _submit(name: str, runs: list, launcher: DictConfig, root: Path, dry_run: bool) -> Launch:
    record = manifest.Manifest.load_or_new(root, name)
    queue = SlurmQueue()
    todo, skipped, listing, unknown = [], {}, [], []
    for overrides_i, cfg in runs:
        key = identity.run_key(cfg)
        rdir = identity.run_dir(cfg, key)
        listing.append((overrides_i, key, str(rdir)))
        state = run_state(rdir, record.last_job(key), queue)
        if state.name == RunState.UNKNOWN:
            unknown.append(state.detail)
        if state.name in (RunState.COMPLETED, RunState.DIVERGED, RunState.RUNNING,
                          RunState.PENDING, RunState.CORRUPT, RunState.UNKNOWN):
            skipped[key] = state.name
        else:  # new, interrupted (resumes from its checkpoint) or failed (runs again)
            todo.append((key, cfg, overrides_i))
    if unknown:  # submitted again, a run still queued would run twice
        print(f"WARNING: {len(unknown)} run(s) left alone: {unknown[0]}", file=sys.stderr)
    accepted = set()  # optimizer configs checked once per sweep, whatever their lr
    for _, cfg, overrides_i in todo:
        # local and debug jobs train on this machine: its devices are theirs
        check_run(overrides_i, cfg, trains_here=launcher.name in ("local", "debug"),
                  accepted=accepted)
    todo = [(key, cfg) for key, cfg, _ in todo]
    if launcher.name == "slurm" and todo:  # time and memory from the plan of what goes out
        launcher = OmegaConf.create(_resources(OmegaConf.to_container(launcher),
                                               [cfg for _, cfg in todo]))
    record.set_runs(listing)
    if dry_run:  # checked, nothing written
        return Launch(name, runs, [k for k, _ in todo], skipped, [], None, [])
    if not todo:
        record.save()
        return Launch(name, runs, [], skipped, [], None, [])

    if launcher.name == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("launcher=slurm but `sbatch` is not on PATH on this machine: launch "
                         "from a SLURM login node, or use launcher=local (this machine's "
                         "processes); `bash scripts/slurm_local.sh` starts a one-node SLURM here")
    executor = make_executor(launcher, root / "_submitit" / name)
    try:
        jobs = executor.map_array(TrainJob(), [cfg for _, cfg in todo])
    except submitit.core.utils.FailedJobError as e:  # sbatch said no: nothing went out
        scripts = sorted((root / "_submitit" / name).glob(".submission_file_*.sh"),
                         key=lambda p: p.stat().st_mtime)
        raise ConfigError(f"SLURM refused the job array ({str(e).strip()}); nothing was "
                          f"submitted" + (f". The script it was given: {scripts[-1]}"
                                          if scripts else "")) from None
    job_ids = [str(j.job_id) for j in jobs]
    for (key, _), job_id in zip(todo, job_ids):
        record.mark_submitted(key, job_id, launcher.name, time.time())
    record.save()
    if launcher.name == "debug":  # in-process: the jobs run now, one after another
        _run_here(todo, jobs, len(runs))
    return Launch(name, runs, [k for k, _ in todo], skipped, job_ids, executor, jobs)


def _resources(launcher: dict, cfgs: list[dict]) -> dict:
    """The SLURM launcher with its `auto` settings taken from the plan of `cfgs` (printed),
    or a ConfigError naming the fix where a given setting cannot hold them."""
    from sweeps.plan import Hardware, Planner  # imports torch (costs trace on meta)

    planner = Planner(Hardware(launcher.get("plan_gpu") or "h100"))
    plans = []
    for cfg in cfgs:
        key = identity.run_key(cfg)
        try:
            plans.append(planner.plan_run("", 0.0, 0, key, "", cfg))
        except Exception as e:  # said below, never silently: that run is not sized
            plans.append(_Unplanned(key, f"{type(e).__name__}: {e}"))
    unplanned = [p for p in plans if p.error]
    if unplanned:
        print(f"[optbench] WARNING: {len(unplanned)} run(s) could not be planned (the first, "
              f"{unplanned[0].key}: {unplanned[0].error}); the settings below size the others",
              file=sys.stderr)
    resolved = resources.resolve(launcher, plans, cfgs)
    for line in resolved.lines:
        print(f"[optbench] slurm {line}")
    return resolved.launcher


@dataclass
class _Unplanned:
    key: str
    error: str


def _run_here(todo: list, jobs: list, total: int) -> None:
    """The debug launcher's jobs, one after another in this process, with progress (k/N, time
    so far and left). A stop signal (SIGTERM, Ctrl-C) checkpoints the running run and stops
    the launch there (`Preempted`): every run is resumable by the same command."""
    from tasks.train.errors import Preempted

    print(f"[optbench] running {len(jobs)} of the sweep's {total} runs here, one after another "
          f"(launcher=debug)", flush=True)
    t0 = time.time()
    for k, ((key, _), job) in enumerate(zip(todo, jobs), 1):
        error = job.exception()  # a failed run is recorded in its run dir; go on
        if isinstance(error, Preempted):
            print(f"[optbench] {error}: stopped at run {k}/{len(jobs)} ({key}); the same "
                  f"command resumes it and runs the rest", flush=True)
            raise error
        if error is not None:
            print(f"[optbench] run {key} raised {type(error).__name__}: {error}")
        elapsed = time.time() - t0
        print(f"[optbench] {k}/{len(jobs)} runs done, {elapsed / 60:.1f} min so far, about "
              f"{elapsed / k * (len(jobs) - k) / 60:.1f} min left", flush=True)
