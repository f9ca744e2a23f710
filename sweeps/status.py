"""Where each run of a sweep stands, read from its run dir and the scheduler's queue.

    completed / diverged / failed   summary.json says so (written last by the run)
    running                         a live job holds the run's claim file
    pending                         its job waits in the SLURM queue
    interrupted                     stopped without a summary (preempted, killed, lost):
                                    a re-launch resumes it from its checkpoint
    unknown                         its SLURM job's state could not be read (squeue failed
                                    or is missing): never read as "not queued", so a launch
                                    leaves it alone rather than submit it twice
    corrupt                         a file of the run dir cannot be read (the detail names
                                    it); a re-launch leaves the run alone until it is fixed
    new                             never submitted
A failed run is never shown as completed: only the run itself writes its status.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.job import read_claim
from sweeps.manifest import Manifest
from tasks.train import lease, store


class RunState:
    COMPLETED, DIVERGED, FAILED = "completed", "diverged", "failed"
    RUNNING, PENDING, INTERRUPTED, NEW = "running", "pending", "interrupted", "new"
    CORRUPT, UNKNOWN = "corrupt", "unknown"
    ORDER = (NEW, PENDING, RUNNING, INTERRUPTED, UNKNOWN, COMPLETED, DIVERGED, FAILED, CORRUPT)


@dataclass
class State:
    name: str
    detail: str = ""


class QueueUnknown(RuntimeError):
    """The SLURM queue could not be read: whether a job waits or runs is unknown."""


class SlurmQueue:
    """One look at this user's SLURM jobs (job id → state code, arrays expanded), taken on
    first use and kept by this object: a status pass asks once however many runs it covers.
    A look that fails (squeue missing, timing out, or exiting non-zero, as a busy controller
    does) raises QueueUnknown on every question: an unread queue is not an empty one."""

    def __init__(self):
        self._jobs: dict[str, str] | None = None
        self._error = ""

    def state(self, job_id: str) -> str | None:
        if self._jobs is None and not self._error:
            try:
                self._jobs = _squeue()
            except QueueUnknown as e:
                self._error = str(e)
        if self._error:
            raise QueueUnknown(self._error)
        return self._jobs.get(str(job_id))


SQUEUE_TIMEOUT_S = 60


def _squeue() -> dict[str, str]:
    if shutil.which("squeue") is None:
        raise QueueUnknown("squeue is not on PATH here (look from a SLURM login node)")
    command = ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %t"]
    try:
        out = subprocess.run(command, capture_output=True, text=True,
                             timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise QueueUnknown(f"{' '.join(command)}: {e}") from e
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        raise QueueUnknown(f"{' '.join(command)} failed: {why}")
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            jobs[parts[0]] = parts[1]
    return jobs


def job_alive(job_id: str, launcher: str, host: str | None = None,
              queue: SlurmQueue | None = None) -> bool:
    if launcher == "slurm":
        return (queue or SlurmQueue()).state(job_id) is not None
    if host is not None and host != socket.gethostname():
        return True  # a local job on another machine: cannot tell, assume alive
    try:
        return lease.pid_alive(int(str(job_id).removeprefix("local-")))
    except ValueError:
        return False


def run_state(rdir: Path, last_job: dict | None = None,
              queue: SlurmQueue | None = None) -> State:
    """Where the run stands; `queue` is the SLURM queue look to use (a status pass shares
    one), a fresh one if none is given."""
    rdir = Path(rdir)
    try:
        return _run_state(rdir, last_job, queue or SlurmQueue())
    except (store.CorruptFile, store.MetricsError) as e:
        return State(RunState.CORRUPT, str(e))
    except QueueUnknown as e:
        return State(RunState.UNKNOWN, f"its job's state is unknown ({e}); nothing is "
                                       f"submitted for it until the queue answers")


def _run_state(rdir: Path, last_job: dict | None, queue: SlurmQueue) -> State:
    summary = store.read_summary(rdir)
    if summary is not None:
        if not isinstance(summary, dict) or summary.get("status") not in (
                RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED):
            raise store.CorruptFile(f"{rdir / 'summary.json'} has no valid status; move it "
                                    f"aside or delete it")
        return State(summary["status"], summary.get("error") or summary.get("diverged_reason")
                     or "")
    holder = lease.read(rdir / store.LEASE_FILE)
    if holder is not None and holder.is_live():
        return State(RunState.RUNNING, f"pid {holder.pid} on {holder.host}")
    claim = read_claim(rdir)
    if claim and job_alive(claim["job_id"], claim["launcher"], claim.get("host"), queue):
        return State(RunState.RUNNING, f"job {claim['job_id']} on {claim.get('host')}")
    if last_job and last_job["launcher"] == "slurm":
        code = queue.state(last_job["job_id"])
        if code is not None:
            name = RunState.RUNNING if code in ("R", "CG") else RunState.PENDING
            return State(name, f"job {last_job['job_id']} ({code})")
    if last_job and last_job["launcher"] == "local" and job_alive(last_job["job_id"], "local"):
        return State(RunState.RUNNING, f"local job {last_job['job_id']}")
    if (rdir / "ckpt.pt").exists() or claim or last_job:
        return State(RunState.INTERRUPTED, "no summary and no live job; re-launch resumes it")
    return State(RunState.NEW)


def progress(rdir: Path) -> int | None:
    """Last logged step, read from the end of metrics.jsonl (None if unreadable)."""
    try:
        rows = store.MetricsLog(Path(rdir) / "metrics.jsonl").read()
    except store.MetricsError:
        return None
    return rows[-1]["step"] if rows else None


def error_cause(rdir: Path) -> str:
    """The root cause: the first line of error.txt."""
    path = Path(rdir) / "error.txt"
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[0].strip() if lines else ""


@dataclass
class RunRow:
    run_dir: str
    run_key: str
    overrides: list[str]
    state: State
    step: int | None
    final_loss: float | None
    error: str


def sweep_status(runs_root: Path, name: str) -> list[RunRow]:
    record = Manifest.load(runs_root, name)
    queue = SlurmQueue()
    rows = []
    for r in record.runs:
        rdir = Path(r["run_dir"])
        state = run_state(rdir, record.last_job(r["run_key"]), queue)
        summary = {} if state.name == RunState.CORRUPT else store.read_summary(rdir) or {}
        error = {RunState.FAILED: error_cause(rdir), RunState.CORRUPT: state.detail}
        rows.append(RunRow(str(rdir), r["run_key"], r["overrides"], state, progress(rdir),
                           (summary.get("final") or {}).get("train_loss"),
                           error.get(state.name, "")))
    return rows


ENDED = (RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED)


def wait_for_sweep(runs_root: Path, name: str, poll_s: float, until_done: bool = True,
                   progress: bool = True) -> list[RunRow]:
    """The sweep's rows, after waiting (with `until_done`) until no run is left to wait for:
    every run ended, or none is running, queued or of unknown state (an interrupted or
    corrupt run waits for a relaunch, not for time)."""
    from tqdm import tqdm

    rows = sweep_status(runs_root, name)
    bar = tqdm(total=len(rows), desc=f"sweep {name}", unit="run",
               disable=not (until_done and progress))
    while until_done:
        c = counts(rows)
        bar.n = sum(c[s] for s in ENDED)
        bar.set_postfix({k: v for k, v in c.items() if v and k not in ENDED}, refresh=True)
        # an unknown run may be queued: it is waited for, as the queue may answer next time
        if bar.n == len(rows) or c[RunState.RUNNING] + c[RunState.PENDING] \
                + c[RunState.UNKNOWN] == 0:
            break
        time.sleep(poll_s)
        rows = sweep_status(runs_root, name)
    bar.close()
    return rows


def counts(rows: list[RunRow]) -> dict[str, int]:
    return {s: sum(r.state.name == s for r in rows) for s in RunState.ORDER}


def format_table(name: str, rows: list[RunRow]) -> str:
    c = counts(rows)
    head = f"sweep {name}: {len(rows)} runs — " + ", ".join(f"{k} {v}" for k, v in c.items() if v)
    shared = set.intersection(*(set(r.overrides) for r in rows)) if len(rows) > 1 else set()
    lines = [head]
    if shared:
        lines.append("shared: " + " ".join(o for o in rows[0].overrides if o in shared))
    lines += ["", f"{'run key':<12} {'state':<12} {'step':>7} {'loss':>9}  overrides"]
    for r in rows:
        loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "–"
        step = str(r.step) if r.step is not None else "–"
        own = " ".join(o for o in r.overrides if o not in shared)
        lines.append(f"{r.run_key:<12} {r.state.name:<12} {step:>7} {loss:>9}  {own}")
        if r.error:
            lines.append(f"{'':<12} error: {r.error}")
    return "\n".join(lines)
