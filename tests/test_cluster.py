"""Paper scale on a cluster, short of a GPU: the queue read as it is (unknown when squeue
fails), and the launch's resources taken from the plan."""

import getpass
import os
import stat

import pytest

from sweeps import manifest
from sweeps.launch import launch
from sweeps.status import RunState, run_state
from tasks.train import identity
from tests.conftest import TINY, compose_cfg

TIMED_OUT = "slurm_load_jobs error: Socket timed out on send/recv operation"


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    """An `squeue` first on PATH: it records its arguments, then prints `out` and exits with
    `rc` (the controller timing out, by default)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args = tmp_path / "squeue_args"

    def install(out: str = "", err: str = TIMED_OUT, rc: int = 1) -> None:
        script = bin_dir / "squeue"
        script.write_text(f"#!/bin/sh\necho \"$@\" > {args}\nprintf '%s' '{out}'\n"
                          f"echo '{err}' >&2\nexit {rc}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    install.args = args
    return install


def test_a_failed_squeue_is_unknown_not_an_empty_queue(tmp_path, fake_squeue):
    rdir = tmp_path / "run"
    rdir.mkdir()
    job = {"launcher": "slurm", "job_id": "4242_3", "time": 0.0}
    fake_squeue()
    state = run_state(rdir, job)
    assert state.name == RunState.UNKNOWN, state
    assert "Socket timed out" in state.detail
    # the same job, listed by a queue that answers: pending; only this user's jobs are asked
    fake_squeue(out="4242_3 PD\n", err="", rc=0)
    assert run_state(rdir, job).name == RunState.PENDING
    assert f"-u {getpass.getuser()}" in fake_squeue.args.read_text()
    # an answering queue without the job: the run is interrupted (a re-launch resumes it)
    fake_squeue(out="", err="", rc=0)
    assert run_state(rdir, job).name == RunState.INTERRUPTED


def test_a_launch_leaves_a_run_of_unknown_state_alone(tmp_path, data_root, fake_squeue,
                                                      capsys):
    """A re-launch while the controller does not answer would submit a queued run twice."""
    overrides = [*TINY, "steps=5", f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}",
                 "launcher=slurm"]
    cfg = compose_cfg(overrides[:-3], runs_root=tmp_path / "runs", data_root=data_root)
    key = identity.run_key(cfg)
    record = manifest.Manifest.load_or_new(tmp_path / "runs", "queued")
    record.set_runs([(overrides, key, str(identity.run_dir(cfg, key)))])
    record.mark_submitted(key, "4242_0", "slurm", 0.0)
    record.save()
    fake_squeue()
    result = launch("queued", runs=[overrides])
    assert result.submitted == [] and result.skipped == {key: RunState.UNKNOWN}
    assert "1 run(s) left alone" in capsys.readouterr().err
