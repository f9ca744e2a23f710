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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
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
