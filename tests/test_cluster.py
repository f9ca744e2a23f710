"""Paper scale on a cluster, short of a GPU: the queue read as it is (unknown when squeue
fails), and the launch's resources taken from the plan."""

import getpass
import os
import re
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


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch, fake_squeue):
    """An `sbatch` first on PATH that keeps the script submitit generated and answers as
    SLURM does (a queue that answers, empty): the real launch path, nothing submitted."""
    bin_dir = tmp_path / "bin"
    kept = tmp_path / "submitted"
    kept.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(f"#!/bin/sh\nfor a; do last=$a; done\ncp \"$last\" {kept}/\n"
                      f"echo 'Submitted batch job 4242'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    fake_squeue(out="", err="", rc=0)
    return kept


def sbatch_lines(kept) -> dict[str, str]:
    [script] = list(kept.iterdir())
    lines = [x.split(None, 1)[1] for x in script.read_text().splitlines()
             if x.startswith("#SBATCH ")]
    return dict(x.lstrip("-").split("=", 1) if "=" in x else (x.lstrip("-"), "") for x in lines)


def test_a_paper_table_launched_as_typed_asks_for_what_its_plan_needs(tmp_path, fake_sbatch,
                                                                      capsys):
    """`reproduce.py softsign_llm scale=paper launcher=slurm`, nothing else: the jobs ask for
    a GPU and 8 CPUs a task, the host memory the plan needs (a 774M checkpoint loaded whole,
    compile workers) and enough requeues of the time limit for ~100-hour runs."""
    from sweeps.reproduce import reproduce

    code = reproduce("softsign_llm", ["scale=paper", "launcher=slurm",
                                      f"runs_root={tmp_path / 'runs'}",
                                      f"data_root={tmp_path / 'data'}"], "test")
    out = capsys.readouterr().out
    assert code == 0, out
    got = sbatch_lines(fake_sbatch)
    assert got["gpus-per-node"] == "1" and got["cpus-per-task"] == "8"
    assert got["time"] == "240"
    mem = int(got["mem"].removesuffix("GB"))
    assert f"launcher.mem_gb={mem} (auto: " in out and "checkpoint load 9.3" in out
    assert mem >= (4 + 9.3) * 1.2
    requeues = int(out.split("launcher.max_requeues=")[1].split(" ")[0])
    hours = float(out.split("the longest run plans at ")[1].split(" h")[0])
    assert (requeues + 1) * 4 >= hours > 24  # 240-minute jobs: every slot counted
    # submitit requeues a job that timed out while its countdown lasts: the launch's value
    from submitit.core.utils import DelayedSubmission

    pickled = list((tmp_path / "runs" / "_submitit").rglob("*_submitted.pkl"))
    assert pickled and all(DelayedSubmission.load(p)._timeout_countdown == requeues
                           for p in pickled)


def test_a_given_setting_that_cannot_hold_the_runs_is_refused_before_any_job(tmp_path,
                                                                              fake_sbatch):
    from sweeps.reproduce import reproduce
    from tasks.train.errors import ConfigError

    with pytest.raises(ConfigError, match=r"launcher.mem_gb=8 cannot hold runs that need \d+ "
                                          r"GB a node .* Fix: launcher.mem_gb=\d+ \(or auto\)"):
        reproduce("softsign_llm", ["scale=paper", "launcher=slurm", "launcher.mem_gb=8",
                                   f"runs_root={tmp_path / 'runs'}"], "test")
    assert not list(fake_sbatch.iterdir())  # nothing was submitted


@pytest.mark.parametrize("key, value, allowed", [
    ("max_requeues", -1, "'auto' or a number >= 0"), ("max_requeues", "many", "'auto'"),
    ("mem_gb", 0, "'auto' or a number >= 1 (or null"), ("plan_gpu", "h1000", "'h100'")])
def test_resource_settings_are_auto_or_a_number_named_when_wrong(key, value, allowed):
    from sweeps.compose import compose_runs
    from sweeps.launch import validate_launcher
    from tasks.train.errors import ConfigError

    launcher = compose_runs([["launcher=slurm"]], validate_runs=False)[0][1]["launcher"]
    validate_launcher(launcher)
    with pytest.raises(ConfigError, match=rf"launcher.{key} must be .*{re.escape(allowed)}.*"
                                          rf"{re.escape(repr(value))}"):
        validate_launcher({**launcher, key: value})


def test_sbatch_refusing_the_array_is_an_error_that_names_it_and_submits_nothing(
        tmp_path, fake_sbatch, data_root):
    """A cluster without the GPUs asked for (`Invalid generic resource`): a clear error with
    the script sbatch was given, no traceback, and no run recorded as submitted."""
    from sweeps import manifest
    from tasks.train.errors import ConfigError

    script = tmp_path / "bin" / "sbatch"
    script.write_text("#!/bin/sh\necho 'sbatch: error: Invalid generic resource (gres) "
                      "specification' >&2\nexit 1\n")
    overrides = [*TINY, "steps=5", f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}",
                 "launcher=slurm", "launcher.gpus_per_node=1"]
    with pytest.raises(ConfigError, match=r"SLURM refused the job array \(sbatch: error: "
                                          r"Invalid generic resource.*nothing was submitted\. "
                                          r"The script it was given: .*submission_file_"):
        launch("refused", runs=[overrides])
    record = manifest.Manifest.load_or_new(tmp_path / "runs", "refused")
    assert all(not r.get("jobs") for r in record.runs)
