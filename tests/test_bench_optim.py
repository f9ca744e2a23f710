"""scripts/bench_optim.py runs and reports what it says (a smoke test at toy size: the numbers
themselves belong to results/bench, never to a pass/fail test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_reports_paired_ratios_and_memory_bounds(tmp_path):
    rows = ["adamw_fused", "signum", "signum_fused"]
    done = subprocess.run(
        [sys.executable, "scripts/bench_optim.py", "--device", "cpu", "--blocks", "1",
         "--width", "32", "--reps", "2", "--rounds", "2", "--skip-matrix", "--only", ",".join(rows),
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "optim_step_cpu.json").read_text())
    results = report["elementwise"]["results"]
    assert list(results) == rows
    assert report["elementwise"]["params"] == 2 * 32 + 3 * 32 * 32 + 32 * 32 + 2 * 32 \
        + 2 * 4 * 32 * 32
    assert report["elementwise"]["rounds"] == 2
    for name in rows:
        for ref in ("fused", "foreach"):  # against torch's both AdamW paths, paired
            low, high = results[name][f"vs_{ref}_adamw_range"]
            assert results[name]["ms"] > 0 and 0 < low <= results[name][f"vs_{ref}_adamw"] <= high
        assert results[name]["vs_bound"] > 0  # every row here has a byte count
    # each default path against foreach AdamW, each compiled path against fused AdamW
    assert [results[n]["path"] for n in rows] == ["reference", "default", "fused"]
    assert results["signum"]["target"]["versus"] == "foreach AdamW"
    assert results["signum_fused"]["target"] == {
        "versus": "fused AdamW", "at_most": 2.0,
        "met": results["signum_fused"]["vs_fused_adamw"] <= 2.0}
    table = (tmp_path / "optim_step_cpu.md").read_text()
    assert "median of 2 rounds" in table and "| signum_fused | fused |" in table
    assert report["provenance"]["command"].startswith("python ")


@pytest.mark.parametrize("args,named", [(["--only", "s4_fused"], ["s4_fused", "s3_fused"]),
                                         (["--rounds", "0"], ["--rounds", "0"])])
@pytest.mark.slow
def test_bench_rejects_bad_arguments_before_timing_anything(tmp_path, args, named):
    done = subprocess.run([sys.executable, "scripts/bench_optim.py", *args,
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert all(text in done.stderr for text in named)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_times_the_muon_family_fast_and_exact(tmp_path):
    rows = ["smuon", "smuon_exact", "softmuon", "softmuon_exact"]
    done = subprocess.run(
        [sys.executable, "scripts/bench_optim.py", "--device", "cpu", "--width", "32",
         "--matrix-blocks", "1", "--reps", "2", "--rounds", "2", "--select-every", "10",
         "--only", ",".join(rows),
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "optim_step_cpu.json").read_text())
    assert "elementwise" not in report and "vs_torch_muon" not in report
    results = report["muon_family"]["results"]
    assert set(results) == set(rows) | {"muon", "muon_pe", "smuon_select", "smuon_exact_select",
                                        "smuon_amortized", "smuon_exact_amortized"}
    assert results["muon"]["vs_muon"] == 1.0 and results["muon"]["training_step_overhead"] == 0
    low, high = results["smuon"]["vs_muon_pe_range"]  # paired with the authors' Muon, 2 rounds
    assert 0 < low <= results["smuon"]["vs_muon_pe"] <= high
    assert report["muon_family"]["rounds"] == 2
    select, step = results["smuon_select"]["ms"], results["smuon"]["ms"]
    assert results["smuon_amortized"]["ms"] == pytest.approx((9 * step + select) / 10)
    assert report["muon_family"]["forward_backward_ms"] > 0
    table = (tmp_path / "optim_step_cpu.md").read_text()
    assert "share of a whole training step" in table and "× the authors' Muon" in table
    errors = report["smuon_map"]["rows"]  # 4 shapes × 3 spectra × 4 p
    assert len(errors) == 4 * 3 * 4 and all(0 < r["vs_exact"] < 0.5 for r in errors)
    assert "vs exact (fp64)" in table


def test_the_bench_rows_come_from_the_registry():
    """Every fused-capable optimizer of optim.REGISTRY has its rows (each phase of a switched
    one); no hand-written list to drift from it."""
    import optim
    from scripts import bench_optim

    rows = bench_optim.elementwise_cases(10)
    for spec in optim.ours():
        if spec.fused:
            mine = [r for r in rows if r == spec.name or r.startswith(f"{spec.name}_")
                    and r.removeprefix(f"{spec.name}_") in ("sign_phase", "soft_phase")]
            assert mine, spec.name
    assert {"adamw_fused", "adamw_foreach"} <= set(rows)
