"""Stop `scripts/train.py` with a signal half-way, run it again: it resumes from the checkpoint
and its losses match an uninterrupted run's step by step."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tasks.train import store
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow  # subprocesses, SLURM jobs or gloo groups: minutes in all

STEPS = 300
ARGS = [*TINY, f"steps={STEPS}", "log_every=1", "eval_every=100", "checkpoint_every=0",
        "task.model.n_embd=64", "task.batch_size=8"]


def train(runs_root, data_root, *extra, wait=True):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, *extra,
           f"runs_root={runs_root}", f"data_root={data_root}"]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def losses(runs_root):
    [metrics] = list(runs_root.glob("*/*/*/metrics.jsonl"))
    return [(r["step"], r["loss"]) for r in store.MetricsLog(metrics).read()]


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory, data_root):
    runs = tmp_path_factory.mktemp("reference")
    reference = train(runs, data_root)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    return losses(runs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_signal_checkpoints_and_rerun_resumes_exactly(tmp_path, data_root, reference_losses,
                                                       sig):
    runs = tmp_path / "interrupted"
    proc = train(runs, data_root, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = list(runs.glob("*/*/*/metrics.jsonl"))
        if metrics and len(store.MetricsLog(metrics[0]).read()) >= 40:
            break
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out
    [rdir] = list(runs.glob("*/*/*"))
    assert (rdir / "ckpt.pt").exists() and not (rdir / "summary.json").exists()
    stopped_at = len(losses(runs))
    assert stopped_at < STEPS, "the run finished before the signal; make it longer"

    resumed = train(runs, data_root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {rdir} from step" in resumed.stdout
    assert losses(runs) == reference_losses  # every step, bit for bit
    assert store.read_summary(rdir)["status"] == "completed"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM])
def test_slurms_signals_raise_the_flag_sigterm_does_end_to_end(sig):
    """SLURM's --signal (USR1) and submitit's (USR2) take SIGTERM's path, which the test above
    runs end to end: each sets the flag the loop checks, and the handler before is restored."""
    from tasks.train.loop import PreemptionFlag

    before = signal.getsignal(sig)
    with PreemptionFlag() as flag:
        os.kill(os.getpid(), sig)
        deadline = time.time() + 5
        while flag.signum is None and time.time() < deadline:
            time.sleep(0.01)
        assert flag.signum == sig
    assert signal.getsignal(sig) == before


def test_a_signal_during_an_evaluation_checkpoints_and_the_resume_evaluates(
        tiny_cfg, monkeypatch, tmp_path):
    """A stop signal in the middle of an evaluation (LoRA's generation takes minutes) is answered
    within one eval batch: the step's weights are checkpointed with its unfinished log row, and
    the resumed run evaluates them first: its metrics equal an uninterrupted run's."""
    from tasks import run
    from tasks.train import checkpoint, identity
    from tasks.train.base import EvalShard
    from tasks.train.loop import Preempted

    args = ("steps=8", "eval_every=4", "log_every=1", "checkpoint_every=0",
            "task.eval_batches=3")
    reference = store.MetricsLog(identity.run_dir(tiny_cfg(*args, runs_root=tmp_path / "ref"))
                                 / "metrics.jsonl")
    run(tiny_cfg(*args, runs_root=tmp_path / "ref"))

    real_take, fired = EvalShard.take, []

    def take_then_signal(self, items):
        for item in real_take(self, items):
            yield item
            if not fired:  # after the first eval batch of the run
                fired.append(True)
                os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(EvalShard, "take", take_then_signal)
    cfg = tiny_cfg(*args)
    with pytest.raises(Preempted):
        run(cfg)
    rdir = identity.run_dir(cfg)
    loop_state = checkpoint.load(rdir / "ckpt.pt")["loop"]
    assert loop_state["step"] == 4 and loop_state["pending_row"]["step"] == 4
    assert [r["step"] for r in store.MetricsLog(rdir / "metrics.jsonl").read()] == [1, 2, 3]

    monkeypatch.setattr(EvalShard, "take", real_take)
    assert run(cfg)["status"] == "completed"
    timing = {"tokens_per_s"}
    resumed = [{k: v for k, v in r.items() if k not in timing}
               for r in store.MetricsLog(rdir / "metrics.jsonl").read()]
    assert resumed == [{k: v for k, v in r.items() if k not in timing} for r in reference.read()]
    assert "val_loss" in resumed[3]


def test_every_rank_asks_for_the_stop_flag_as_often_when_the_shares_differ():
    """Asking is collective under DDP: a rank with fewer eval batches must still ask each time
    the others do, or the ranks wait on each other for ever."""
    from tasks.train.base import EvalShard

    asked = {0: 0, 1: 0}

    def counter(rank):
        def ask():
            asked[rank] += 1
            return False
        return ask

    got = {rank: list(EvalShard(rank, 2, counter(rank)).take(range(5))) for rank in (0, 1)}
    assert got == {0: [0, 2, 4], 1: [1, 3]}
    assert asked[0] == asked[1] == 3


@pytest.mark.slow
def test_a_sweep_run_in_this_process_shows_progress_and_stops_on_sigterm(tmp_path, data_root):
    """launcher=debug (a tiny table's launcher) runs one run after another: it prints k/N and
    the time left, and SIGTERM checkpoints the running run and stops the whole launch (exit
    143), where it used to go on with the next runs; launching again finishes every run."""
    cmd = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "launch", "stop-me", *TINY,
           "steps=400", "log_every=1", "eval_every=200", "seed=0,1,2", "launcher=debug",
           f"runs_root={tmp_path}", f"data_root={data_root}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until one run is done and the second one is training
        lines.append(line)
        if "1/3 runs done" in line:
            break
    assert any("about" in x and "min left" in x for x in lines), "".join(lines)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("*/*/*/metrics.jsonl"))) < 2:
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + out
    assert "stopped at run 2/3" in out
    summaries = list(tmp_path.glob("*/*/*/summary.json"))
    assert len(summaries) == 1  # the third never started
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list(tmp_path.glob("*/*/*/summary.json"))) == 3
    assert "resuming" in again.stdout  # the stopped run went on from its checkpoint
