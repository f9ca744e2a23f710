"""The lease's rules, one by one: staleness read from the heartbeat, fencing after a takeover,
a heartbeat thread that never writes over a successor, and records that were never a live
holder's. (The whole SIGSTOP/SIGCONT scenario, with real processes, is in test_faults.py.)"""

import json
import os
import socket
import time

import pytest
import torch

from tasks.train import checkpoint, lease, store
from tasks.train.lease import Holder, Lease, LeaseHeld, LeaseLost


def record(**fields) -> dict:
    now = time.time()
    return {"host": "another-host", "pid": 12345, "token": "theirs", "started": now,
            "heartbeat": now, **fields}


def write(path, rec) -> None:
    path.write_text(json.dumps(rec))


def test_staleness_is_judged_by_the_heartbeat_not_by_when_the_holder_started(tmp_path):
    path = tmp_path / "lease.json"
    # a healthy run that started an hour ago and beat a second ago: live
    write(path, record(started=time.time() - 3600, heartbeat=time.time() - 1))
    with pytest.raises(LeaseHeld, match="in use by pid 12345 on another-host"):
        Lease(path, "run").acquire()
    # one that started a second ago and has been silent past the stale time: taken over
    write(path, record(started=time.time() - 1, heartbeat=time.time() - lease.STALE_S - 5))
    taken = Lease(path, "run").acquire()
    try:
        assert taken.held()
    finally:
        taken.release()


def test_a_heartbeat_in_the_future_beyond_the_stale_time_is_stale(tmp_path):
    path = tmp_path / "lease.json"
    write(path, record(heartbeat=time.time() + 10 * lease.STALE_S))  # a clock gone wrong
    taken = Lease(path, "run").acquire()
    taken.release()
    write(path, record(heartbeat=time.time() + 5))  # a little skew between hosts: live
    with pytest.raises(LeaseHeld):
        Lease(path, "run").acquire()


@pytest.mark.parametrize("pid", [2**70, -5, 0])
def test_a_lease_with_an_impossible_pid_was_never_a_holders_and_is_stale(tmp_path, pid):
    path = tmp_path / "lease.json"
    write(path, record(host=socket.gethostname(), pid=pid))  # os.kill(2**70) overflows
    assert lease.read(path) is None
    taken = Lease(path, "run").acquire()
    taken.release()


def test_the_holder_that_lost_its_lease_is_fenced_out_of_every_write(tmp_path):
    rdir = tmp_path / "run"
    mine = Lease(rdir / store.LEASE_FILE, "run dir", heartbeat_s=60, stale_s=120).acquire()
    log = store.MetricsLog(rdir / "metrics.jsonl")
    with store.fenced(rdir, mine.fence):
        log.truncate_after(0)
        log.append({"step": 1, "loss": 2.0})
        store.write_json(rdir / "summary.json", {"status": "completed"})
        # paused past the stale time: a relaunch takes the run over
        theirs = Lease(rdir / store.LEASE_FILE, "run dir", stale_s=0.0).acquire()
        with pytest.raises(LeaseLost, match=rf"lost its lease, it is held by pid {os.getpid()}"):
            log.append({"step": 2, "loss": 1.0})
        with pytest.raises(LeaseLost):
            store.write_json(rdir / "summary.json", {"status": "failed"})
        with pytest.raises(LeaseLost):
            checkpoint.save(rdir / "ckpt.pt", {"w": torch.ones(2)})
        # a loss is final, even should the file name this process again
        write(rdir / store.LEASE_FILE, {**json.loads((rdir / store.LEASE_FILE).read_text()),
                                        "token": mine.token})
        with pytest.raises(LeaseLost):
            mine.fence()
    assert [r["step"] for r in log.read()] == [1]
    assert store.read_summary(rdir) == {"status": "completed"}
    assert not list(rdir.glob("ckpt*")) and not list(rdir.glob(".*.tmp"))
    theirs.release()
    mine.release()


def test_the_heartbeat_thread_never_writes_over_the_lease_that_took_over(tmp_path):
    path = tmp_path / "lease.json"
    mine = Lease(path, "run", heartbeat_s=0.05, stale_s=10).acquire()
    try:
        write(path, record(token="successor"))  # taken over while this process was paused
        time.sleep(0.5)  # ten beats
        assert json.loads(path.read_text())["token"] == "successor"
        with pytest.raises(LeaseLost):
            mine.fence()
    finally:
        mine.release()
    assert json.loads(path.read_text())["token"] == "successor"  # only the holder removes it


def test_a_paused_holder_that_renewed_before_the_rename_keeps_its_lease(tmp_path):
    """Breaking a stale lease renames it away and looks again: a record whose heartbeat moved
    since it was judged belongs to a holder that woke up, and is put back."""
    path = tmp_path / "lease.json"
    old = record(heartbeat=time.time() - 1000)
    write(path, old)
    judged = Holder.parse(old)
    write(path, {**old, "heartbeat": time.time()})  # renewed after the judgment
    Lease(path, "run")._break_stale(judged)
    assert json.loads(path.read_text())["heartbeat"] > judged.heartbeat


@pytest.mark.parametrize("variable,value", [("OPTBENCH_LEASE_STALE_S", "abc"),
                                            ("OPTBENCH_LEASE_STALE_S", "-1"),
                                            ("OPTBENCH_LEASE_HEARTBEAT_S", "500")])
def test_lease_times_from_the_environment_are_checked(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="OPTBENCH_LEASE_"):
        lease.timing()


# ---------------------------------------------------------------- the metrics log's second line


def test_the_metrics_log_cuts_rows_another_process_appended_and_refuses_going_back(tmp_path):
    log = store.MetricsLog(tmp_path / "metrics.jsonl")
    log.truncate_after(0)
    log.append({"step": 1, "loss": 3.0})
    with open(log.path, "a") as f:  # a writer that lost its lease between proof and write
        f.write(json.dumps({"step": 7, "loss": 9.0}) + "\n")
    with pytest.warns(UserWarning, match="another process appended"):
        log.append({"step": 2, "loss": 2.0})
    assert [r["step"] for r in log.read()] == [1, 2]
    with pytest.raises(store.MetricsError, match="steps must increase"):
        log.append({"step": 2, "loss": 1.0})
    assert [r["step"] for r in log.read()] == [1, 2]


def test_a_metrics_file_whose_steps_double_back_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 2, 3)))
    with pytest.raises(store.MetricsError, match=r"metrics.jsonl:4: step 2 after step 3"):
        store.MetricsLog(path).read()
