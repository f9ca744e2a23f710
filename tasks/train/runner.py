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

from omegaconf import DictConfig, OmegaConf

from tasks.train import config as run_config
from tasks.train import distributed, identity, parallel, store
from tasks.train.assemble import build_run
from tasks.train.environment import device_info, environment
from tasks.train.epochs import derive_steps
from tasks.train.lease import Lease, LeaseLost
from tasks.train.loop import Preempted, PreemptionFlag, Trainer
from tasks.train.summary import build_summary
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
    written last. Best effort: on a full disk even these may not fit. A process that lost the
    run's lease records nothing: the run dir is its successor's."""
    if isinstance(error, LeaseLost):
        print(f"[optbench] {error}", file=sys.stderr)
        return
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


COMPILE_CACHE = "_compile_cache"


def compile_cache(runs_root: Path) -> None:
    """torch.compile's caches (inductor's and Triton's kernels) under the runs root, which a
    cluster keeps between jobs, unless the user set them: a requeued job reuses the kernels
    instead of compiling again (/tmp is the node's own, gone with the job)."""
    cache = Path(runs_root).expanduser().absolute() / COMPILE_CACHE
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))


def run(cfg: DictConfig, validated: bool = False) -> dict:
    """Train one run described by `cfg` (a composed conf/train.yaml); return its summary.
    `validated`: the config was checked when it was composed (a sweep's job): only what can
    change between composing and training is checked again, the device and the data."""
    compile_cache(Path(cfg.runs_root))  # before anything asks inductor for its cache (it pins it)
    derive_steps(cfg)
    if not validated:
        run_config.validate(cfg)
    run_config.validate_device(cfg)
    key = identity.run_key(cfg)
    rdir = identity.run_dir(cfg)
    previous = store.read_summary(rdir)
    if previous is not None and previous.get("status") in store.FINISHED_STATUSES:
        print(f"[optbench] {rdir} already {previous['status']}; nothing to do")
        return previous
    run_config.check_data(cfg)  # before the run dir exists
    run_config.check_fits(cfg)
    ctx = distributed.context(parallel.of(cfg).timeout_min)
    if cfg.grad_accum % ctx.world:
        raise run_config.ConfigError(
            f"grad_accum ({cfg.grad_accum}) must be a multiple of the number of data-parallel "
            f"processes ({ctx.world}): each step's global batch is split between them")
    # one writer per run dir: rank 0 takes the lease before anything is written there, and
    # every rank learns whether it did before entering DDP setup (else, with the lease held
    # elsewhere, the others would wait in DDP's first broadcast until the NCCL timeout)
    if not ctx.is_main:
        if distributed.any_flag(False, ctx):
            raise RuntimeError(f"rank 0 could not take the lease of {rdir}; see its log")
        return _run_follower(build_run(cfg, ctx, rdir)[1])
    store.make_runs_root(cfg.runs_root)
    lease = Lease(rdir / store.LEASE_FILE, f"run dir {rdir}")
    try:
        lease.acquire()
    except BaseException as e:
        distributed.any_flag(True, ctx)  # the other ranks stop too
        if isinstance(e, OSError):  # a full disk, say: no lease is left; record it if it fits
            _record_failure(rdir, _start_summary(cfg, key, rdir), e)
        raise
    distributed.any_flag(False, ctx)
    try:
        with store.fenced(rdir, lease.fence):  # every write there proves the lease first
            return _run_main(cfg, ctx, key, rdir)
    finally:
        lease.release()


def record_refusal(cfg: DictConfig, error: BaseException) -> None:
    """A run refused where it was to train (data not prepared on that node, no such device):
    recorded as failed in its run dir, for the sweep that submitted it to report."""
    key = identity.run_key(cfg)
    rdir = identity.run_dir(cfg, key)
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
        env = {**environment(), "code_version": identity.code_version(cfg)}
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
        if trainer.sharded:
            summary["data_parallel"]["sharding"] = "fsdp"
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
