"""What a submitted job runs: one training run, resumable and requeueable.

- `TrainJob` is a submitit Checkpointable: when SLURM sends USR1 before the time limit (or on
  preemption), the training loop finishes its step, writes its checkpoint and hands the signal
  to submitit, which requeues this same job; the requeued job resumes from the checkpoint.
- While it runs, the job holds a claim file in its run dir (job id, host, pid) so a re-launched
  sweep leaves it alone; a claim whose job is gone is ignored.
- With several tasks (submitit's tasks_per_node / nodes), every task joins torch.distributed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import submitit
from omegaconf import OmegaConf

from tasks.train import identity, store
from tasks.train.errors import ConfigError
from tasks.train.lease import LeaseHeld, LeaseLost

CLAIM = "running.json"


def job_id() -> str:
    try:
        env = submitit.JobEnvironment()
        return str(env.job_id)
    except RuntimeError:  # not inside a submitit job (debug launcher)
        return f"local-{os.getpid()}"


def write_claim(rdir: Path, launcher: str) -> None:
    store.write_json(rdir / CLAIM, {"job_id": job_id(), "host": socket.gethostname(),
                                    "pid": os.getpid(), "launcher": launcher,
                                    "started": time.time()})


def read_claim(rdir: Path) -> dict | None:
    try:
        return store.read_json(Path(rdir) / CLAIM)
    except store.CorruptFile:  # torn by a crash: no live claim
        return None


def release_claim(rdir: Path) -> None:
    """Remove this job's claim; a claim another job wrote since is left alone."""
    claim = read_claim(rdir) or {}
    if claim.get("job_id") == job_id() and claim.get("pid") == os.getpid():
        (Path(rdir) / CLAIM).unlink(missing_ok=True)


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class TrainJob(submitit.helpers.Checkpointable):
    """Runs `tasks.run` on a resolved config (a plain dict, so it pickles cleanly)."""

    def __call__(self, cfg: dict) -> dict:
        from tasks import run
        from tasks.train import distributed, parallel
        from tasks.train.runner import record_refusal

        config = OmegaConf.create(cfg)
        store.make_runs_root(config.runs_root)
        rdir = identity.run_dir(config)
        rdir.mkdir(parents=True, exist_ok=True)
        distributed.init_from_submitit(parallel.of(cfg).timeout_min)
        try:
            if is_rank_zero():
                write_claim(rdir, str(config.launcher.name))
            summary = run(config, validated=True)  # checked when it was composed
        except (LeaseHeld, LeaseLost) as e:  # another live process writes this run: its own
            print(f"[optbench] {e}")
            return {"status": "busy", "run_dir": str(rdir), "holder": str(e)}
        except ConfigError as e:  # refused on this node (data, devices): the sweep must see it
            if is_rank_zero():
                record_refusal(config, e)
            raise
        finally:
            if is_rank_zero():
                release_claim(rdir)
            distributed.shutdown()
        return {"status": summary["status"], "run_dir": str(rdir)}

    def checkpoint(self, cfg: dict) -> submitit.helpers.DelayedSubmission:
        # The training loop has already written ckpt.pt; requeue the same call, which resumes.
        return submitit.helpers.DelayedSubmission(TrainJob(), cfg)

