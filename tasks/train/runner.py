"""One run, start to finish: validate → find the run dir → resume or start → train → summary.

    summary.json is written last; status is one of
      completed   all steps done
      diverged    loss non-finite or past the cap; the step is recorded (a result, not an error)
      failed      an exception; its traceback is in error.txt, and a re-launch runs it again
A run whose summary says completed or diverged is not run again.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tasks.train import checkpoint, distributed, store
from tasks.train import config as run_config
from tasks.train.environment import device_info, environment
from tasks.train.epochs import check_loaded, derive_steps
from tasks.train.lease import Lease
from tasks.train.loop import Preempted, PreemptionFlag, Trainer
from tasks.train.metrics import LossTracker, SpikeConfig, first_at_target
from tasks.train.schedule import build_scheduler
from tasks.train.wandb_mirror import start_mirror


def record_environment(rdir: Path, env: dict, from_step: int) -> None:
    """Append this attempt's environment to env.json (a resumed run may land on another node
    or, after an upgrade, other library versions: every attempt is kept)."""
    try:
        previous = store.read_json(rdir / "env.json") or {}
    except store.CorruptFile as e:  # a record of earlier attempts only: start it again
        warnings.warn(f"{e}; starting a new attempt list")
        previous = {}
    attempts = [*previous.get("attempts", []),
                {**env, "from_step": from_step,
                 "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    store.write_json(rdir / "env.json", {"attempts": attempts})


def build_summary(cfg, key, rdir, task, trainer, status, env: dict) -> dict:
    state, tracker, target = trainer.state, trainer.tracker, task.target
    metric_curve = [(s, ev[target.metric]) for s, ev in state.evals if target.metric in ev]
    steps_to_target = first_at_target(metric_curve, target.value, target.mode)
    tokens_per_step = task.tokens_per_batch * cfg.grad_accum
    # losses reach the tracker at log steps: a run that diverged may have taken steps past the
    # one whose loss did, and those do not count as done
    steps_done = state.step if state.diverged_at is None else state.diverged_at
    best_eval = None
    if metric_curve:
        pick = min if target.mode == "min" else max
        best_eval = pick(v for _, v in metric_curve)
    return {
        "status": status,
        "run_key": key,
        "run_dir": str(rdir),
        "task": cfg.task.name,
        "optim": cfg.optim.name,
        "sweep": cfg.get("sweep"),
        "steps": cfg.steps,
        "steps_done": steps_done,
        "tokens_done": steps_done * tokens_per_step,
        "diverged_at": state.diverged_at,
        "diverged_reason": state.diverged_reason or None,
        "error": None,
        "initial": {"train_loss": tracker.initial_loss},
        "final": {"train_loss": tracker.last_loss,
                  **(state.evals[-1][1] if state.evals else {})},
        "best": {"train_loss": tracker.summary()["best_train_loss"],
                 f"{target.metric}": best_eval},
        "spikes": {k: v for k, v in tracker.summary().items()
                   if k.startswith(("spike", "max_spike", "sigma"))},
        "convergence": {
            "auc_log_loss": tracker.summary()["auc_log_loss"],
            "target": {"metric": target.metric, "value": target.value, "mode": target.mode},
            "steps_to_target": steps_to_target,
            "tokens_to_target": (steps_to_target * tokens_per_step
                                 if steps_to_target is not None else None),
        },
        "evals": [{"step": s, **ev} for s, ev in state.evals],
        "wall_time_s": state.elapsed_s,
        # mean seconds of one optimizer step (+ precision rounding), over the timed steps
        "optimizer_step_s": (state.optimizer_s / state.optimizer_timed_steps
                             if state.optimizer_timed_steps else None),
        "task_info": task.describe(),
        "git_commit": env["git_commit"],
        "code_version": env["code_version"],
        "environment": env,
    }


def build_run(cfg: DictConfig, ctx: distributed.Context = distributed.Context(),
              rdir: Path | None = None):
    """(task, trainer, device): the one way a run is assembled (the runner, the benchmarks,
    the tests). With a run dir the metrics log and checkpoint live there and the trainer is
    restored from the run's checkpoint if any; without one nothing is read or written."""
    device = run_config.resolve_device(cfg.device)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    torch.manual_seed(cfg.seed)
    task = run_config.build_task(cfg, device)
    if cfg.get("epochs") is not None:
        check_loaded(cfg, task.epoch_examples)
    precision = run_config.precision(cfg.precision, device)
    task.model = precision.prepare_model(task.model)
    optimizer = run_config.build_optimizer(cfg.optim, task.model)
    train_model = None
    if ctx.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            task.model, device_ids=[device.index] if device.type == "cuda" else None)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.steps)
    nowhere = Path(os.devnull)
    trainer = Trainer(cfg, task, optimizer, scheduler, LossTracker(SpikeConfig(**cfg.metrics)),
                      store.MetricsLog(rdir / "metrics.jsonl" if rdir else nowhere), None,
                      rdir / "ckpt.pt" if rdir else None, precision, ctx, train_model)
    if rdir is not None and checkpoint.exists(trainer.ckpt_path):
        try:
            trainer.load_checkpoint()
            print(f"[optbench] resuming {rdir} from step {trainer.state.step}")
        except checkpoint.CheckpointError:
            if not cfg.get("discard_bad_checkpoint"):
                raise
            checkpoint.discard(trainer.ckpt_path)
            print(f"[optbench] discard_bad_checkpoint=true: the checkpoints of {rdir} were set "
                  f"aside (*.discarded); starting from step 0")
    return task, trainer, device


def failure_cause(error: BaseException, rdir: Path) -> str:
    """The root cause in one line: a full disk said as such (torch's writer hides ENOSPC
    behind a RuntimeError), else the innermost exception."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    for e in chain:
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
            where = getattr(e, "filename", None) or rdir
            return f"no space left on device at {where}"
    root = chain[-1]
    if "write failed" in str(root) or "write failed" in str(chain[0]):
        free = shutil.disk_usage(rdir).free
        if free < 64 << 20:
            return f"no space left on device at {rdir} ({free} bytes free)"
    return f"{type(root).__name__}: {root}"


def _record_failure(rdir: Path, summary: dict, error: BaseException) -> None:
    """error.txt (root cause first, then the traceback) and a summary that says failed,
    written last. Best effort: on a full disk even these may not fit."""
    cause = failure_cause(error, rdir)
    summary = {**summary, "status": "failed", "error": cause}
    try:
        store.write_text(rdir / "error.txt",
                         cause + "\n\n" + "".join(traceback.format_exception(error)))
        store.write_json(rdir / "summary.json", summary)
    except OSError as e:
        print(f"[optbench] could not record the failure in {rdir} ({e}): {cause}",
              file=sys.stderr)


def _run_follower(trainer: Trainer) -> dict:
    """Ranks other than 0 train in lockstep and write nothing; rank 0 writes the summary."""
    with PreemptionFlag() as preempt:
        state = trainer.train(preempt)
    status = "diverged" if state.diverged_at is not None else "completed"
    distributed.replica_divergence(trainer.model, trainer.ctx)  # rank 0 records it
    if status == "completed":
        trainer.save_checkpoint()  # only joins rank 0's barrier
    return {"status": status, "rank": trainer.ctx.rank}


def run(cfg: DictConfig) -> dict:
    """Train one run described by `cfg` (a composed conf/train.yaml); return its summary."""
    derive_steps(cfg)
    run_config.validate(cfg)
    run_config.validate_device(cfg.device)
    key = store.run_key(cfg)
    rdir = store.run_dir(cfg)
    previous = store.read_summary(rdir)
    if previous is not None and previous.get("status") in store.FINISHED_STATUSES:
        print(f"[optbench] {rdir} already {previous['status']}; nothing to do")
        return previous
    run_config.check_data(cfg)  # before the run dir exists
    ctx = distributed.context()
    if cfg.grad_accum % ctx.world:
        raise run_config.ConfigError(
            f"grad_accum ({cfg.grad_accum}) must be a multiple of the number of data-parallel "
            f"processes ({ctx.world}): each step's global batch is split between them")
    if not ctx.is_main:
        return _run_follower(build_run(cfg, ctx, rdir)[1])
    # one writer per run dir: the lease is taken before anything is written there
    store.make_runs_root(cfg.runs_root)
    lease = Lease(rdir / store.LEASE_FILE, f"run dir {rdir}")
    try:
        lease.acquire()
    except OSError as e:  # a full disk, say: no lease is left behind; record it if space allows
        _record_failure(rdir, _start_summary(cfg, key, rdir), e)
        raise
    try:
        return _run_main(cfg, ctx, key, rdir)
    finally:
        lease.release()


def record_refusal(cfg: DictConfig, error: BaseException) -> None:
    """A run refused where it was to train (data not prepared on that node, no such device):
    recorded as failed in its run dir, for the sweep that submitted it to report."""
    key = store.run_key(cfg)
    rdir = store.run_dir(cfg, key)
    _record_failure(rdir, _start_summary(cfg, key, rdir), error)


def _start_summary(cfg: DictConfig, key: str, rdir: Path) -> dict:
    """The summary of a run that has not trained yet (what a failure before step 1 records)."""
    return {"status": "failed", "run_key": key, "run_dir": str(rdir), "task": cfg.task.name,
            "optim": cfg.optim.name, "sweep": cfg.get("sweep"), "steps": cfg.steps,
            "steps_done": 0}


def _run_main(cfg: DictConfig, ctx: distributed.Context, key: str, rdir: Path) -> dict:
    for stale in ("summary.json", "error.txt"):  # a failed attempt's
        (rdir / stale).unlink(missing_ok=True)
    for leftover in store.remove_leftovers(rdir):  # we hold the lease: no writer owns them
        print(f"[optbench] removed {leftover.name}, left by an interrupted write")
    summary = _start_summary(cfg, key, rdir)
    trainer = None
    try:
        store.write_text(rdir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        env = environment()
        summary.update(git_commit=env["git_commit"], code_version=env["code_version"],
                       environment=env)
        task, trainer, device = build_run(cfg, ctx, rdir)
        trainer.metrics_log.truncate_after(trainer.state.step, trainer.state.logged_step)
        env = {**env, **device_info(device)}  # the device the run trains on
        record_environment(rdir, env, from_step=trainer.state.step)
        trainer.mirror = start_mirror(
            cfg.logger, run_key=key, run_dir=rdir, config=OmegaConf.to_container(cfg,
                                                                                resolve=True),
            group=cfg.get("sweep") or f"{cfg.task.name}/{cfg.optim.name}",
            name=f"{cfg.optim.name}-{key}")
        print(f"[optbench] run {key}: {cfg.task.name} × {cfg.optim.name} on {device} → {rdir}")
        t0 = time.perf_counter()
        with PreemptionFlag() as preempt:
            state = trainer.train(preempt)
        status = "diverged" if state.diverged_at is not None else "completed"
        replica_diff = distributed.replica_divergence(task.model, ctx)
        if status == "completed":
            trainer.save_checkpoint()  # final weights, for evaluation or fine-tuning
        summary = build_summary(cfg, key, rdir, task, trainer, status, env)
        summary["data_parallel"] = {"world_size": ctx.world,
                                    "replica_max_abs_diff": replica_diff}
        trainer.mirror.summary({"status": status,
                                "final_train_loss": summary["final"]["train_loss"],
                                **{f"final_{k}": v for k, v in summary["final"].items()
                                   if k != "train_loss"},
                                **summary["spikes"], **summary["convergence"]})
        trainer.mirror.finish(exit_code=0)
        store.write_json(rdir / "summary.json", summary)
    except Preempted:  # no summary: the checkpoint is the state; a re-launch resumes it
        if trainer is not None and trainer.mirror is not None:
            trainer.mirror.finish(exit_code=1)
        raise
    except Exception as e:  # anything, the final save and a full disk included
        if trainer is not None and trainer.state.step:
            summary = {**summary, "steps_done": trainer.state.step}
        _record_failure(rdir, summary, e)
        if trainer is not None and trainer.mirror is not None:
            trainer.mirror.finish(exit_code=1)
        raise
    final = summary["final"]["train_loss"]
    print(f"[optbench] {status} in {time.perf_counter() - t0:.1f}s: final train loss "
          + (f"{final:.4f}" if isinstance(final, float) and math.isfinite(final) else str(final))
          + f"; summary at {rdir / 'summary.json'}")
    return store.read_summary(rdir)
