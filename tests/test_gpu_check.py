"""scripts/gpu_check.py, the one script run where a GPU is lent: its code path on toy sizes on
the CPU (the numbers mean nothing here), so that it does not first fail on the GPU."""

import json
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses, SLURM jobs or gloo groups: minutes in all


def test_the_gpu_check_runs_every_part_and_writes_its_report(tmp_path):
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--quick",
                           "--steps", "20", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["complete"] is True and report["budget"]["cut"] == {}
    assert report["provenance"]["commit"] and "gpu_check.py" in report["provenance"]["command"]
    import optim

    assert list(report["fused"]) == [spec.name for spec in optim.REGISTRY if spec.fused]
    assert all(0 <= d["elements_beyond_bf16_rounding"] < 1e-2 for d in report["fused"].values())
    assert set(report["optimizer_steps"]["elementwise"]["results"]) >= {"s3", "s3_fused"}
    for cell in ("s3_spikes", "smuon_gpt"):
        got = report["cells"][cell]
        assert got["status"] == "completed" and got["tokens_per_s"] > 0
        assert 0 < got["mfu_vs_measured_matmul"] < 1.5
        # the task config's _target_, what the plan reads
        assert got["task_target"] == "tasks.nanogpt.NanoGPTTask"
    assert (tmp_path / "gpu_check_optim_cpu.json").exists()


def test_the_gpu_check_refuses_cuda_where_there_is_none():
    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_the_gpu_check_writes_what_it_measured_when_its_budget_ends(tmp_path):
    """A device window shorter than the check still yields numbers: the smoke section first,
    the report written after every section, a cut section named with why."""
    import optim

    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--quick",
                           "--steps", "20", "--budget-s", "25", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert time.monotonic() - t0 < 25 + 20  # the budget, plus starting and writing
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["complete"] is False
    cut = report["budget"]["cut"]
    assert cut and all("budget ended" in why for why in cut.values())
    smoke = report["smoke"]
    assert smoke["bf16_matmul_tflops"] > 0
    assert set(smoke["optimizer_step"]) == {spec.name for spec in optim.REGISTRY}
    assert all(step["ok"] for step in smoke["optimizer_step"].values()), smoke
    assert "smoke" not in cut
