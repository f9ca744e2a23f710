"""Fault injection: each fault a user can meet, and what the harness must do about it.

Two writers, damaged checkpoints, damaged metrics and summaries, a full disk, a non-finite
first loss, and bad values that must be caught before a run dir exists.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from sweeps.launch import launch
from sweeps.status import RunState, run_state, sweep_status
from tasks import run
from tasks.train import checkpoint, identity, runner, store
from tasks.train.config import ConfigError
from tasks.train.lease import Lease, LeaseHeld
from tests.conftest import ROOT, TINY, compose_cfg


def quadratic_cfg(root, *overrides, **task_kwargs):
    cfg = compose_cfg(["steps=40", "eval_every=10", "log_every=5", "checkpoint_every=10",
                       "progress=false", "metrics.warmup=5", "optim.lr=0.01", "grad_clip=null",
                       *overrides], runs_root=root / "runs", data_root=root / "data")
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.QuadraticTask",
                                     "name": "quadratic", **task_kwargs})
    return cfg


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A run that failed at step 25: checkpoints at 20 (newest) and 10 (previous)."""
    cfg = quadratic_cfg(tmp_path, raise_at_step=25)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg)
    monkeypatch.setenv("OPTBENCH_TEST_NO_RAISE", "1")
    return cfg, identity.run_dir(cfg)


@pytest.fixture
def fresh_evals(tmp_path_factory):
    return run(quadratic_cfg(tmp_path_factory.mktemp("fresh")))["evals"]


# ---------------------------------------------------------------- one writer per run


def test_a_second_writer_is_refused_and_touches_nothing(tmp_path):
    cfg = quadratic_cfg(tmp_path)
    rdir = identity.run_dir(cfg)
    holder = Lease(rdir / store.LEASE_FILE, "test holder").acquire()
    try:
        with pytest.raises(LeaseHeld, match=rf"in use by pid {os.getpid()} on "):
            run(cfg)
        assert sorted(p.name for p in rdir.iterdir()) == [store.LEASE_FILE]
        assert run_state(rdir).name == RunState.RUNNING
    finally:
        holder.release()
    assert not (rdir / store.LEASE_FILE).exists()
    assert run(cfg)["status"] == "completed"


def test_a_lease_left_by_a_dead_process_is_taken_over(tmp_path):
    cfg = quadratic_cfg(tmp_path)
    rdir = identity.run_dir(cfg)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    rdir.mkdir(parents=True)
    (rdir / store.LEASE_FILE).write_text(json.dumps(
        {"host": os.uname().nodename, "pid": int(dead), "token": "x", "started": time.time(),
         "heartbeat": time.time()}))
    assert run(cfg)["status"] == "completed"
    assert not (rdir / store.LEASE_FILE).exists()


def test_only_the_holder_removes_a_lease(tmp_path):
    first = Lease(tmp_path / "lease.json", "x").acquire()
    # to a reader with a zero stale timeout, first looks stale: it takes the lease over
    second = Lease(tmp_path / "lease.json", "x", stale_s=0.0).acquire()
    first.release()  # must not remove the lease second holds now
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == second.token
    second.release()
    assert not (tmp_path / "lease.json").exists()


@pytest.mark.slow
def test_two_train_commands_at_once_one_trains_the_other_exits_3(tmp_path, data_root):
    # the first trains far longer than the test lasts; it is stopped by a signal at the end
    args = [sys.executable, "scripts/train.py", *TINY, "steps=1000000", "log_every=1",
            "checkpoint_every=0", f"runs_root={tmp_path}", f"data_root={data_root}"]
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(f"*/*/*/{store.LEASE_FILE}")) and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    # stop the first once it has logged a step: its signal handler is in place by then
    while time.time() < deadline and not any(
            p.stat().st_size for p in tmp_path.glob("*/*/*/metrics.jsonl")):
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, out
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"in use by pid {first.pid}" in second.stderr
    [metrics] = tmp_path.glob("*/*/*/metrics.jsonl")
    steps = [r["step"] for r in store.MetricsLog(metrics).read()]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no duplicated or reordered row
    assert not list(tmp_path.glob(f"*/*/*/{store.LEASE_FILE}"))  # released on the way out


def _wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _attempts(rdir: Path) -> int:
    """How many processes have started training the run (env.json, one entry each)."""
    try:
        return len((store.read_json(rdir / "env.json") or {}).get("attempts", []))
    except store.CorruptFile:
        return 0


@pytest.mark.slow
def test_a_paused_holder_that_lost_its_lease_stops_and_the_run_has_one_writer(tmp_path,
                                                                                  data_root):
    """SLURM's suspend (SIGSTOP) past the stale time, a relaunch takes the run over, then the
    first process continues (SIGCONT): it must stop without writing, and the relaunch finishes
    the run with one strictly increasing metrics log, equal to an uninterrupted run's."""
    env = {**os.environ, "OPTBENCH_LEASE_STALE_S": "2", "OPTBENCH_LEASE_HEARTBEAT_S": "0.25"}
    args = [sys.executable, "scripts/train.py", *TINY, "steps=400", "log_every=1",
            "eval_every=100", "checkpoint_every=10", f"data_root={data_root}"]
    runs = tmp_path / "runs"
    first = subprocess.Popen([*args, f"runs_root={runs}"], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = None
    try:
        _wait_for(lambda: list(runs.glob("*/*/*/ckpt.pt")))  # the relaunch resumes from it
        first.send_signal(signal.SIGSTOP)
        [rdir] = [p.parent for p in runs.glob("*/*/*/ckpt.pt")]
        time.sleep(3)  # past the stale time: the paused holder's heartbeat is silent
        second = subprocess.Popen([*args, f"runs_root={runs}"], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_for(lambda: _attempts(rdir) == 2)  # the relaunch took the run over and resumed
        first.send_signal(signal.SIGCONT)
        out_first, _ = first.communicate(timeout=300)
        out_second, _ = second.communicate(timeout=300)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
    assert first.returncode == 3, out_first
    assert "lost its lease" in out_first and f"pid {second.pid}" in out_first, out_first
    assert second.returncode == 0, out_second
    assert store.read_summary(rdir)["status"] == "completed"
    rows = store.MetricsLog(rdir / "metrics.jsonl").read()
    assert [r["step"] for r in rows] == list(range(1, 401))  # one writer: each step once
    alone = subprocess.run([*args, f"runs_root={tmp_path / 'alone'}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    [metrics] = (tmp_path / "alone").glob("*/*/*/metrics.jsonl")
    assert [r["loss"] for r in store.MetricsLog(metrics).read()] == [r["loss"] for r in rows]


@pytest.mark.parametrize("text", ["", '{"host": "x", "pi', "[1, 2]", "null",
                                  '{"host": "x", "pid": "abc", "token": 1, "started": 0}',
                                  '{"host": "x", "pid": 1, "token": "t", "started": "soon", '
                                  '"heartbeat": "never"}'],
                         ids=["empty", "torn", "list", "null", "no-heartbeat", "bad-types"])
def test_an_unreadable_lease_is_stale_and_taken_over_at_once(tmp_path, text):
    cfg = quadratic_cfg(tmp_path)
    rdir = identity.run_dir(cfg)
    rdir.mkdir(parents=True)
    (rdir / store.LEASE_FILE).write_text(text)  # just now: its mtime is fresh
    t0 = time.time()
    assert run(cfg)["status"] == "completed"
    assert time.time() - t0 < 60  # not refused, not waited out (the stale limit is 180 s)
    assert not (rdir / store.LEASE_FILE).exists()
    assert run_state(rdir).name == RunState.COMPLETED


def test_a_sweep_being_launched_cannot_be_launched_again(tmp_path):
    with Lease(tmp_path / "_sweeps" / "lr.lease", "sweep"):
        with pytest.raises(LeaseHeld, match="in use by pid"):
            launch("lr", ["optim.lr=1e-3,3e-3", f"runs_root={tmp_path}", "launcher=local"])
    assert not (tmp_path / "_sweeps" / "lr.json").exists()  # nothing recorded or submitted


# ---------------------------------------------------------------- checkpoints


def test_truncated_newest_checkpoint_falls_back_to_the_previous(interrupted, fresh_evals):
    cfg, rdir = interrupted
    ckpt = rdir / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"ckpt.pt does not match its digest.*previous"):
        summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["evals"] == fresh_evals  # resumed from step 10, exactly
    assert (rdir / "ckpt.pt.corrupt").exists()


def test_a_flipped_bit_in_tensor_data_is_caught(interrupted, fresh_evals):
    cfg, rdir = interrupted
    ckpt = rdir / "ckpt.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01  # a mantissa bit somewhere in the stored tensors
    ckpt.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match its digest"):
        summary = run(cfg)
    assert summary["evals"] == fresh_evals


@pytest.mark.parametrize("damage", ["empty", "garbled"])
def test_no_good_checkpoint_fails_naming_the_files_and_the_way_out(interrupted, fresh_evals,
                                                                   damage):
    cfg, rdir = interrupted
    for path in (rdir / "ckpt.pt", rdir / "ckpt.prev.pt"):
        path.write_bytes(b"" if damage == "empty" else os.urandom(path.stat().st_size))
    for _ in range(2):  # the same clear error on every rerun
        with pytest.raises(checkpoint.CheckpointError, match="discard_bad_checkpoint=true"):
            run(cfg)
        summary = store.read_summary(rdir)
        assert summary["status"] == "failed" and "ckpt.pt" in summary["error"]
        assert "ckpt.prev.pt" in (rdir / "error.txt").read_text().splitlines()[0]
    with open_dict(cfg):
        cfg.discard_bad_checkpoint = True
    summary = run(cfg)  # same run key: the flag is not part of the identity
    assert summary["status"] == "completed" and summary["evals"] == fresh_evals
    assert not (rdir / "error.txt").exists()  # a successful rerun clears the stale error
    assert (rdir / "ckpt.pt.discarded").exists()


def test_a_tampered_checkpoint_cannot_run_code(interrupted, tmp_path):
    cfg, rdir = interrupted
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for path in (rdir / "ckpt.pt", rdir / "ckpt.prev.pt"):
        torch.save({"model": Payload()}, path)  # with a digest that matches it
        checkpoint.digest_path(path).write_text(checkpoint.sha256(path) + "\n")
    with pytest.raises(checkpoint.CheckpointError, match="does not load"):
        run(cfg)
    assert not marker.exists()


# ---------------------------------------------------------------- metrics and summaries


@pytest.mark.parametrize("line", ["garbage", "[1, 2]", "null", '{"loss": 1.0}'])
def test_a_malformed_metrics_line_is_an_error_naming_file_and_line(interrupted, line):
    cfg, rdir = interrupted
    metrics = rdir / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    metrics.write_text("\n".join([rows[0], line, *rows[1:]]) + "\n")
    with pytest.raises(store.MetricsError, match=rf"metrics.jsonl:2: .*{re.escape(line)}"):
        run(cfg)
    assert store.read_summary(rdir)["status"] == "failed"
    assert "metrics.jsonl:2" in (rdir / "error.txt").read_text().splitlines()[0]


def test_a_torn_final_metrics_line_is_dropped_with_a_warning(interrupted, fresh_evals):
    cfg, rdir = interrupted
    with open(rdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 26, "lo')
    with pytest.warns(UserWarning, match="torn final line"):
        summary = run(cfg)
    assert summary["evals"] == fresh_evals
    steps = [r["step"] for r in store.MetricsLog(rdir / "metrics.jsonl").read()]
    assert steps == sorted(set(steps))


def test_a_damaged_env_record_is_started_again(interrupted, fresh_evals):
    cfg, rdir = interrupted
    (rdir / "env.json").write_text('{"attempts": [')
    with pytest.warns(UserWarning, match="env.json is not valid JSON"):
        summary = run(cfg)
    assert summary["evals"] == fresh_evals
    assert [a["from_step"] for a in json.loads((rdir / "env.json").read_text())["attempts"]] \
        == [20]


@pytest.mark.slow
def test_status_and_launch_survive_a_corrupt_summary(tmp_path):
    overrides = ["steps=10", "eval_every=10", f"runs_root={tmp_path}", "launcher=debug", *TINY,
                 f"data_root={tmp_path / 'data'}"]
    launch("two", ["seed=0,1", *overrides])
    rows = sweep_status(tmp_path, "two")
    assert [r.state.name for r in rows] == ["completed", "completed"]
    rdirs = sorted(tmp_path.glob("*/*/*/summary.json"))
    rdirs[0].write_text('{"status": "compl')
    rows = sweep_status(tmp_path, "two")
    states = sorted(r.state.name for r in rows)
    assert states == ["completed", "corrupt"]
    [corrupt] = [r for r in rows if r.state.name == "corrupt"]
    assert str(rdirs[0]) in corrupt.error
    again = launch("two", ["seed=0,1", *overrides])
    assert again.submitted == [] and sorted(again.skipped.values()) == ["completed", "corrupt"]


# ---------------------------------------------------------------- every failure recorded


def _enospc(path):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _fail_once(monkeypatch, owner, name, target):
    """Make owner.name raise ENOSPC the first time `target(*args)` names a path (the file
    whose write fails)."""
    real, armed = getattr(owner, name), [True]

    def fake(*args, **kwargs):
        path = target(*args)
        if armed[0] and path is not None:
            armed[0] = False
            raise _enospc(path)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fake)


def _named(name):
    return lambda path, *_: path if Path(path).name == name else None


FULL_DISK_AT = {
    # where the write fails → (what fails it, the file error.txt names)
    "lease": (lambda mp: _fail_once(mp, os, "link", lambda src, dst: dst if Path(
        dst).name == store.LEASE_FILE else None), store.LEASE_FILE),
    "config": (lambda mp: _fail_once(mp, store, "write_text", _named("config.yaml")),
               "config.yaml"),
    "metrics": (lambda mp: _fail_once(mp, store.MetricsLog, "append", lambda log, row: (
        log.path if row["step"] == 15 else None)), "metrics.jsonl"),
    "checkpoint": (lambda mp: _fail_once(mp, checkpoint, "save", lambda path, obj: (
        path if obj["loop"]["step"] == 20 else None)), "ckpt.pt"),
    "summary": (lambda mp: _fail_once(mp, store, "write_json", _named("summary.json")),
                "summary.json"),
}


@pytest.mark.slow
@pytest.mark.parametrize("where", list(FULL_DISK_AT))
def test_a_full_disk_anywhere_is_a_failed_run_that_resumes_once_space_is_back(
        tmp_path, monkeypatch, fresh_evals, capsys, where):
    cfg = quadratic_cfg(tmp_path)
    rdir = identity.run_dir(cfg)
    fill, named = FULL_DISK_AT[where]
    with monkeypatch.context() as mp:
        fill(mp)
        with pytest.raises(OSError, match="No space left on device"):
            run(cfg)
        assert not (rdir / store.LEASE_FILE).exists()  # never an empty lease left behind
        first = (rdir / "error.txt").read_text().splitlines()[0]
        assert first.startswith("no space left on device at ") and named in first
        if where != "summary":  # the failed summary fits where only the first write did not
            assert store.read_summary(rdir)["status"] == "failed"
        assert run_state(rdir).name in (RunState.FAILED, RunState.INTERRUPTED)
    summary = run(cfg)  # space is back: no wait, no flag
    assert summary["status"] == "completed" and summary["evals"] == fresh_evals
    assert not (rdir / "error.txt").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB filesystem (tmpfs; needs root), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("free_kb", [0, 16, 32, 64, 96])
def test_a_real_full_disk_fails_the_run_cleanly_and_it_resumes_once_space_is_back(
        small_disk, fresh_evals, free_kb):
    """Filled to `free_kb` kilobytes, the disk runs out at a different write each time (the
    lease, the config, a checkpoint, the metrics); every time the run stops as a failure and
    trains on, to the same numbers, once the space is back."""
    filler = small_disk / "filler"
    stats = os.statvfs(small_disk)
    filler.write_bytes(b"\0" * max(stats.f_bavail * stats.f_frsize - free_kb * 1024, 0))
    cfg = quadratic_cfg(small_disk)
    with pytest.raises((OSError, RuntimeError)):
        run(cfg)
    rdir = identity.run_dir(cfg)
    assert not (rdir / store.LEASE_FILE).exists()
    filler.unlink()
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["evals"] == fresh_evals
    assert not list(rdir.glob(f".*{store.TEMP_SUFFIX}"))


def test_disk_full_at_the_final_checkpoint_is_a_failed_run_with_the_cause(tmp_path,
                                                                          monkeypatch):
    cfg = quadratic_cfg(tmp_path)
    real_save = checkpoint.save

    def save(path, obj):
        if obj["loop"]["step"] == 40:
            raise RuntimeError("[enforce fail at inline_container.cc:671] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed")
        real_save(path, obj)

    monkeypatch.setattr(checkpoint, "save", save)
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda path: type("U", (), {"free": 4096}))
    with pytest.raises(RuntimeError, match="file write failed"):
        run(cfg)
    rdir = identity.run_dir(cfg)
    summary = store.read_summary(rdir)
    assert summary["status"] == "failed" and summary["steps_done"] == 40
    first_line = (rdir / "error.txt").read_text().splitlines()[0]
    assert first_line == f"no space left on device at {rdir} (4096 bytes free)"
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert run(cfg)["status"] == "completed"  # resumes from step 30 once there is room
    assert not (rdir / "error.txt").exists()


def test_disk_full_while_logging_metrics_names_the_file(tmp_path, monkeypatch):
    cfg = quadratic_cfg(tmp_path)

    def append(self, row):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(store.MetricsLog, "append", append)
    with pytest.raises(OSError):
        run(cfg)
    rdir = identity.run_dir(cfg)
    assert store.read_summary(rdir)["status"] == "failed"
    assert (rdir / "error.txt").read_text().splitlines()[0] == \
        f"no space left on device at {rdir / 'metrics.jsonl'}"


def test_a_non_finite_first_loss_is_diverged_with_strict_json(tmp_path, capsys):
    cfg = quadratic_cfg(tmp_path, nan_at_step=0)
    summary = run(cfg)
    assert summary["status"] == "diverged" and summary["diverged_at"] == 1
    text = (identity.run_dir(cfg) / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert "diverged in" in capsys.readouterr().out


# ---------------------------------------------------------------- bad values, caught early


BAD_VALUES = [
    (["task.batch_size=0"], "task.batch_size must be an integer >= 1, got 0"),
    (["task.batch_size=-4"], "task.batch_size must be an integer >= 1, got -4"),
    (["task.model.n_head=3"], r"must be divisible by task.model.n_head \(3\)"),
    (["task.model.block_size=0"], "task.model.block_size must be an integer >= 1, got 0"),
    (["task=nonsmooth", "task.heavy_prob=2"], r"task.heavy_prob must be a number in \(0, 1\)"),
    (["task=nonsmooth", "task.dim=0"], "task.dim must be an integer >= 1, got 0"),
    (["task=cifar_tiny", "task.arch=resnet99"], r"task.arch must be one of \['resnet18'"),
    (["seed=abc"], "seed must be an integer >= 0, got 'abc'"),
    (["optim.betas=[0.9]"], r"optim \(adamw\): Invalid optim.betas: \[0.9\] \(must be a list of 2 "
                            r"numbers in \[0, 1\)\)"),
    (["optim.betas=abc"], "Invalid optim.betas: 'abc' \\(must be a list of 2 numbers"),
    (["optim.betas=[0.9,0.999,0.5]"], "Invalid optim.betas: .* \\(must be a list of 2 numbers"),
    (["optim=adan", "optim.betas=[0.9,0.9]"],
     "Invalid optim.betas: .* \\(must be a list of 3 numbers"),
    (["optim=sgd", "optim.momentum=1.5"], r"optim \(sgd\): Invalid optim.momentum: 1.5 \(must be a "
                                          r"number in \[0, 1\)\)"),
    (["optim.lr=inf"], r"Invalid optim.lr: inf \(must be a finite number > 0\)"),
    (["optim.weight_decay=nan"],
     r"Invalid optim.weight_decay: nan \(must be a finite number >= 0\)"),
    (["+stpes=5"], r"(^|: )stpes is not read by anything; the keys a run config can hold: .*steps"),
    (["+optim.nesterov=true"], r"optim \(adamw\): optim.nesterov is not read by anything"),
    (["+task.n_layer=2"], r"task.n_layer is not read by anything; .* model"),
    (["+schedule.decay_fraction=0.5"], r"schedule.decay_fraction is not read by anything"),
    (["precision=fp32", "+precision.compute=fp32"], r"precision.compute is not read"),
    (["+metrics.window=5"], r"metrics.window is not read by anything"),
    (["+logger.project=x"], r"logger.project is not read by anything"),
    (["+task.seed=3"], r"task.seed is set by the run, not by the task config"),
    (["task=nonsmooth", "task.init=1e39"], r"task.init must be a number in \[-3.40282e\+38"),
    (["task.corpus=../x"], r"task.corpus must be a name of letters, digits"),
    (["task.corpus=/etc"], r"task.corpus must be a name of letters, digits"),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", BAD_VALUES, ids=lambda v: str(v))
def test_bad_values_are_caught_before_a_run_dir_or_a_submission(overrides, message, tmp_path):
    base = ["progress=false"] if any(o.startswith("task=") for o in overrides) else TINY
    cfg = compose_cfg([*base, *overrides], runs_root=tmp_path / "runs",
                      data_root=tmp_path / "data")
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    with pytest.raises(ConfigError, match=message):
        launch("bad", [*base, *overrides, f"runs_root={tmp_path / 'runs'}",
                       "launcher=slurm"], dry_run=True)
    assert not (tmp_path / "runs").exists()


def test_data_that_is_not_prepared_is_refused_before_a_run_dir(tmp_path):
    cfg = compose_cfg([*TINY, "task.corpus=not_prepared"], runs_root=tmp_path / "runs",
                      data_root=tmp_path / "data")
    message = r"corpus not_prepared is not prepared .*prepare_data.py text --input FILE"
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    with pytest.raises(ConfigError, match=message):  # a local job trains here: checked here
        launch("data", [*TINY, "task.corpus=not_prepared", f"runs_root={tmp_path / 'runs'}",
                        "launcher=local"], dry_run=True)
    assert not (tmp_path / "runs").exists()


def test_a_launcher_key_nothing_reads_is_refused_before_a_submission(tmp_path):
    with pytest.raises(ConfigError, match=r"launcher.reservation is not read by anything; .*qos"):
        launch("reservation", [*TINY, f"runs_root={tmp_path / 'runs'}", "launcher=slurm",
                               "+launcher.reservation=maint"], dry_run=True)
    with pytest.raises(ConfigError, match=r"launcher.partition is not read by anything"):
        launch("local", [*TINY, f"runs_root={tmp_path / 'runs'}", "launcher=local",
                         "+launcher.partition=gpu"], dry_run=True)
    assert not (tmp_path / "runs").exists()


def test_the_runs_root_is_created_private_to_the_user(tmp_path):
    cfg = quadratic_cfg(tmp_path)
    run(cfg)
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o700  # job pickles live under it
    launch("private", ["steps=2", "eval_every=1", f"runs_root={tmp_path / 'other'}",
                       "launcher=debug", *TINY, f"data_root={tmp_path / 'data'}"])
    assert (tmp_path / "other").stat().st_mode & 0o777 == 0o700


def test_a_run_that_diverges_after_good_steps_stops_with_the_steps_it_took(tmp_path):
    cfg = quadratic_cfg(tmp_path, nan_at_step=12)  # the 13th step; the next log step is 15
    summary = run(cfg)
    assert summary["status"] == "diverged" and summary["diverged_at"] == 13
    assert summary["steps_done"] == 13 and summary["tokens_done"] == 13 * 16
    assert [e["step"] for e in summary["evals"]] == [10]  # the good steps' eval is kept
    assert "non-finite" in summary["diverged_reason"]


def test_a_deleted_metrics_log_is_noticed_on_resume(interrupted):
    cfg, rdir = interrupted
    (rdir / "metrics.jsonl").unlink()
    with pytest.raises(store.MetricsError, match=r"metrics.jsonl lacks the row of step 20"):
        run(cfg)
    assert "lacks the row of step 20" in (rdir / "error.txt").read_text().splitlines()[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_refused_before_a_run_dir(tmp_path):
    cfg = compose_cfg([*TINY, "device=cuda"], runs_root=tmp_path / "runs",
                      data_root=tmp_path / "data")
    with pytest.raises(ConfigError, match="device='cuda' but CUDA is not available"):
        run(cfg)
    with pytest.raises(ConfigError, match="device='cuda' but CUDA is not available"):
        launch("gpu", [*TINY, "device=cuda", f"runs_root={tmp_path / 'runs'}",
                       "launcher=local"], dry_run=True)
    # a SLURM job trains on a node with its own devices: not checked from here
    launch("gpu", [*TINY, "device=cuda", f"runs_root={tmp_path / 'runs'}", "launcher=slurm"],
           dry_run=True)
    assert not (tmp_path / "runs").exists()
