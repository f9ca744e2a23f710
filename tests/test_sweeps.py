"""Sweeps: composition, fail-fast validation, and real jobs on the local SLURM cluster
(scripts/slurm_local.sh; CI starts it and sets OPTBENCH_REQUIRE_SLURM=1 so these never skip
there)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweeps.compose import CONF_DIR, Composer, compose_sweep, expand
from sweeps.launch import launch
from sweeps.status import RunState, counts, format_table, sweep_status
from tasks import run
from tasks.train import checkpoint, identity, store
from tasks.train.config import ConfigError
from tests.conftest import ROOT, TINY, compose_cfg, load_script

pytestmark = pytest.mark.slow  # subprocesses, SLURM jobs or gloo groups: minutes in all


def test_expand_is_the_cartesian_product_in_order():
    runs = expand(["optim=s3,adamw", "optim.lr=1e-3,2e-3", "seed=range(2)", "steps=5"])
    assert len(runs) == 8
    assert runs[0] == ["optim=s3", "optim.lr=0.001", "seed=0", "steps=5"]
    assert runs[-1] == ["optim=adamw", "optim.lr=0.002", "seed=1", "steps=5"]


@pytest.mark.parametrize("overrides", [
    [],
    ["optim=s3", "optim.p=2", "optim.nesterov=false", "steps=77"],
    ["optim=softsignum", "optim.sign_fraction=0.5", "steps=300", "schedule=wsd"],
    ["optim=muon", "optim.aux_betas=[0.8,0.9]", "precision=bf16", "logger=wandb",
     "grad_clip=null"],
    ["+optim.foreach=true", "launcher=slurm", "launcher.partition=gpu"],
    ["task=cifar_tiny", "optim=smuon", "logger=wandb", "launcher=debug", "precision=fp8_emulated",
     "schedule=constant", "task.batch_size=8"],
    ["task=lora_tiny_arith", "optim=stosignsgd", "seed=3"],
])
def test_cached_composition_equals_hydra(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        want = compose(config_name="train", overrides=overrides)
    want = OmegaConf.to_container(want, resolve=True)
    composer = Composer()
    assert OmegaConf.to_container(composer.compose(overrides), resolve=True) == want
    assert composer.resolve(overrides) == want
    composer.resolve([*overrides, "steps=3", "optim.lr=0.5"])  # a different run in between
    assert composer.resolve(overrides) == want  # leaves the cached base as it was


def test_bad_run_in_a_sweep_fails_before_anything_is_submitted(tmp_path):
    with pytest.raises(ConfigError,
                       match=r"optim.lr=-1.*Invalid optim\.lr: -1 \(must be a finite number > 0\)"):
        launch("bad", ["optim.lr=1e-3,-1", f"runs_root={tmp_path}", "launcher=slurm"])
    with pytest.raises(ConfigError, match=r"cannot override 'optim.lrr'.*Keys there.*'lr'"):
        launch("bad", ["optim.lrr=1e-3,1e-4", f"runs_root={tmp_path}", "launcher=slurm"])
    with pytest.raises(ConfigError, match="adamw"):  # Hydra lists the valid choices
        launch("bad", ["optim=adamx", f"runs_root={tmp_path}", "launcher=slurm"])
    assert not any(tmp_path.iterdir())  # no manifest, no submitit folder, no run dir


def test_sweep_cli_takes_its_flags_anywhere_on_the_line(tmp_path, monkeypatch, capsys):
    base = ["scripts/sweep.py", "launch", "lr"]
    overrides = ["optim.lr=1e-3,3e-3", f"runs_root={tmp_path}", "launcher=local"]
    out = subprocess.run([sys.executable, *base, "--dry-run", *overrides], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # the command line
    assert out.returncode == 0, out.stderr
    assert "2 runs valid; would submit 2" in out.stdout
    # the other places in this process (the script's main; a process each cost seconds)
    script = load_script("sweep")
    for argv in ([*base, *overrides, "--dry-run"], [*base, overrides[0], "--dry-run",
                                                     *overrides[1:]]):
        monkeypatch.setattr(sys, "argv", argv)
        assert script.main() == 0
        assert "2 runs valid; would submit 2" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [*base, *overrides, "--dryrun"])
    with pytest.raises(SystemExit) as refused:
        script.main()
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "unrecognized flags ['--dryrun']" in err
    assert "--dry-run" in err  # the allowed flags
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_distinct_overrides_give_distinct_runs():
    a = compose_sweep(["optim=s3", "optim.p=2,3"])
    b = compose_sweep(["optim=softsignum", "optim.sign_fraction=0.5,0.9"])
    keys = {identity.run_key(cfg) for _, cfg in a + b}
    assert len(keys) == 4


def test_200_run_sweep_composes_quickly():
    t0 = time.perf_counter()
    lrs = ",".join(str(i * 1e-4) for i in range(1, 21))
    runs = compose_sweep(["optim=s3,adamw", f"optim.lr={lrs}", "seed=range(5)"])
    elapsed = time.perf_counter() - t0
    assert len(runs) == 200
    print(f"composed and validated 200 runs in {elapsed:.2f}s")


# ---------------------------------------------------------------- real SLURM


def slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s.startswith(("idle", "mix", "alloc"))
                                       for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm():
    if not slurm_up():
        if os.environ.get("OPTBENCH_REQUIRE_SLURM"):
            pytest.fail("SLURM is required here but not up (bash scripts/slurm_local.sh)")
        pytest.skip("no local SLURM: run `bash scripts/slurm_local.sh` (root) to enable")


def sweep_args(tmp_path, data_root, *extra):
    return [*TINY, f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}",
            "launcher=slurm", "launcher.timeout_min=20", *extra]


def wait_done(runs_root, name, timeout=300, release_requeued=False):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = sweep_status(runs_root, name)
        c = counts(rows)
        if c[RunState.PENDING] and release_requeued:
            # a requeued job waits out SLURM's requeue delay (~2 min); let it start now
            for r in rows:
                if r.state.name == RunState.PENDING:
                    job = r.state.detail.split()[1]
                    subprocess.run(["scontrol", "update", f"jobid={job.split('_')[0]}",
                                    "StartTime=now"], capture_output=True)
        if c[RunState.COMPLETED] + c[RunState.DIVERGED] + c[RunState.FAILED] == len(rows):
            return rows
        time.sleep(1)
    raise AssertionError("sweep did not finish in time:\n" + format_table(name, rows))


def test_sweep_is_one_array_then_resubmits_nothing(slurm, tmp_path, data_root):
    args = sweep_args(tmp_path, data_root, "optim.lr=1e-3,3e-3", "seed=0,1", "steps=10",
                      "eval_every=5")
    first = launch("four", args)
    assert len(first.submitted) == 4
    arrays = {j.split("_")[0] for j in first.job_ids}
    assert len(arrays) == 1, first.job_ids  # one sbatch, one array
    rows = wait_done(tmp_path / "runs", "four")
    assert [r.state.name for r in rows] == [RunState.COMPLETED] * 4
    for r in rows:
        assert r.final_loss is not None and r.step == 10

    t0 = time.perf_counter()
    again = launch("four", args)
    assert again.submitted == [] and again.job_ids == []
    assert set(again.skipped.values()) == {RunState.COMPLETED}
    assert time.perf_counter() - t0 < 5


def test_failed_run_shows_as_failed_with_its_error(slurm, tmp_path, data_root):
    args = sweep_args(tmp_path, data_root, "task.corpus=pystdlib,not_prepared", "steps=5",
                      "eval_every=5")
    launch("mixed", args)
    rows = wait_done(tmp_path / "runs", "mixed")
    by_state = {r.state.name: r for r in rows}
    assert set(by_state) == {RunState.COMPLETED, RunState.FAILED}
    failed = by_state[RunState.FAILED]
    assert "not_prepared" in failed.error and "scripts/prepare_data.py" in failed.error
    table = format_table("mixed", rows)
    assert "failed" in table and "error:" in table
    # launching again re-runs the failed run only
    again = launch("mixed", args)
    assert len(again.submitted) == 1 and list(again.skipped.values()) == [RunState.COMPLETED]
    wait_done(tmp_path / "runs", "mixed")


def signal_mid_run(result, start_s: float = 120) -> tuple[str, Path]:
    """(job id, run dir) of a one-run launch, once it has logged 30 steps and been sent USR2,
    what SLURM sends before the time limit (submitit asks for USR2 there)."""
    [job] = result.job_ids
    rdir = identity.run_dir(result.runs[0][1])
    deadline = time.time() + start_s
    while len(store.MetricsLog(rdir / "metrics.jsonl").read()) < 30:
        assert time.time() < deadline, "the job did not start training"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    return job, rdir


def test_signalled_job_checkpoints_requeues_and_finishes_like_an_uninterrupted_run(
        slurm, tmp_path, data_root):
    steps = ["steps=300", "log_every=1", "eval_every=100", "checkpoint_every=0",
             "task.model.n_embd=64", "task.batch_size=8"]
    job, rdir = signal_mid_run(launch("requeue", sweep_args(tmp_path, data_root, *steps)))
    rows = wait_done(tmp_path / "runs", "requeue", release_requeued=True)
    assert rows[0].state.name == RunState.COMPLETED
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "_submitit").rglob("*log.out"))
    assert "resuming" in logs  # it really was interrupted and resumed

    reference = run(compose_cfg([*TINY, *steps], runs_root=tmp_path / "reference",
                                data_root=data_root))
    resumed = [r["loss"] for r in store.MetricsLog(rdir / "metrics.jsonl").read()]
    uninterrupted = [r["loss"] for r in store.MetricsLog(
        identity.run_dir(compose_cfg([*TINY, *steps], runs_root=tmp_path / "reference",
                                  data_root=data_root)) / "metrics.jsonl").read()]
    assert resumed == uninterrupted
    assert store.read_summary(rdir)["final"] == reference["final"]


@pytest.mark.parametrize("optim_args", [["optim=adamw"], ["optim=stosignsgd"]])
def test_two_task_ddp_job_matches_one_process(slurm, tmp_path, data_root, optim_args):
    common = [*optim_args, "steps=12", "eval_every=6", "grad_accum=2", "log_every=3"]
    result = launch("ddp", sweep_args(tmp_path, data_root, *common, "launcher.tasks_per_node=2"))
    [row] = wait_done(tmp_path / "runs", "ddp")
    assert row.state.name == RunState.COMPLETED, format_table("ddp", [row])
    ddp = store.read_summary(identity.run_dir(result.runs[0][1]))
    assert ddp["data_parallel"] == {"world_size": 2, "replica_max_abs_diff": 0.0}

    single_cfg = compose_cfg([*TINY, *common], runs_root=tmp_path / "single",
                             data_root=data_root)
    single = run(single_cfg)
    assert single["data_parallel"]["world_size"] == 1
    ddp_dir, single_dir = identity.run_dir(result.runs[0][1]), identity.run_dir(single_cfg)
    ddp_rows = store.MetricsLog(ddp_dir / "metrics.jsonl").read()
    single_rows = store.MetricsLog(single_dir / "metrics.jsonl").read()
    for a, b in zip(ddp_rows, single_rows, strict=True):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    if optim_args == ["optim=adamw"]:
        # the same averaged gradient up to summation order: the same weights
        ckpt_a = checkpoint.load(ddp_dir / "ckpt.pt")["model"]
        ckpt_b = checkpoint.load(single_dir / "ckpt.pt")["model"]
        for name, value in ckpt_a.items():
            torch.testing.assert_close(value, ckpt_b[name], rtol=1e-4, atol=1e-5)
    # (sign methods may flip a coordinate whose momentum is ~1e-9 from zero under a different
    # summation order, so for StoSignSGD the check is identical replicas and matching losses)


def test_hydra_multirun_with_the_submitit_launcher_resumes(slurm, tmp_path, data_root):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m",
           "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10", *TINY,
           "optim.lr=1e-3,2e-3", "steps=5", "eval_every=5", f"runs_root={tmp_path}",
           f"data_root={data_root}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    summaries = sorted(tmp_path.glob("*/*/*/summary.json"))
    assert len(summaries) == 2
    assert all(json.loads(p.read_text())["status"] == "completed" for p in summaries)
    stamps = [p.stat().st_mtime_ns for p in summaries]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in summaries] == stamps  # finished runs not re-run


def test_slurm_qos_constraint_exclude_gres_reach_the_sbatch_script(tmp_path):
    """First-class SLURM settings: a command-line override reaches the #SBATCH lines (checked
    on the script submitit would submit); a key the launcher does not read is refused."""
    from omegaconf import OmegaConf

    from sweeps.compose import compose_runs
    from sweeps.launch import ConfigError, make_executor, validate_launcher

    overrides = ["launcher=slurm", "launcher.qos=high", "launcher.constraint=h100",
                 "launcher.exclude='node[01-02]'", "launcher.gres=gpu:h100:4",
                 "launcher.account=optlab"]
    from sweeps import resources

    launcher = compose_runs([overrides], validate_runs=False)[0][1]["launcher"]
    validate_launcher(launcher)
    resolved = resources.resolve(launcher, [], []).launcher  # no run planned: the floors
    script = make_executor(OmegaConf.create(resolved), tmp_path)._make_submission_file_text(
        "true", "uid")
    for line in ("--qos=high", "--constraint=h100", "--exclude='node[01-02]'",
                 "--gres=gpu:h100:4", "--account=optlab"):  # submitit shell-quotes brackets
        assert f"#SBATCH {line}" in script, line
    with pytest.raises(ConfigError, match="launcher.*reservation"):
        validate_launcher({**launcher, "reservation": "maint"})


def test_a_topology_that_cannot_run_is_refused_before_a_submission(tmp_path):
    """nodes=2 tasks_per_node=8 gpus_per_node=1 used to pass launch and fail in the job."""
    from sweeps.launch import ConfigError, launch

    base = [f"runs_root={tmp_path / 'runs'}", "launcher=slurm", "steps=2"]
    with pytest.raises(ConfigError, match=r"tasks_per_node \(8\) must equal "
                                          r"launcher.gpus_per_node \(1\)"):
        launch("topo", [*base, "launcher.nodes=2", "launcher.tasks_per_node=8",
                        "launcher.gpus_per_node=1", "grad_accum=16"], dry_run=True)
    with pytest.raises(ConfigError, match=r"grad_accum \[6\] is not a multiple of the "
                                          r"data-parallel world \(4 = "):
        launch("topo", [*base, "launcher.nodes=2", "launcher.tasks_per_node=2",
                        "launcher.gpus_per_node=2", "grad_accum=6"], dry_run=True)
    launch("topo", [*base, "launcher.nodes=2", "launcher.tasks_per_node=2",
                    "launcher.gpus_per_node=2", "grad_accum=8"], dry_run=True)
    assert not (tmp_path / "runs").exists()


def slurm_nodes() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%D"], capture_output=True, text=True, timeout=30)
    return sum(int(n) for n in out.stdout.split() if n.isdigit()) if out.returncode == 0 else 0


def test_a_two_node_job_trains_data_parallel_and_resumes_after_a_signal(
        slurm, tmp_path, data_root):
    """launcher.nodes=2: one task on each of two SLURM nodes (two slurmd on this host:
    `bash scripts/slurm_local.sh start --nodes 2`) trains data-parallel across them; signalled
    mid-run it checkpoints, is requeued and resumes, and its losses are one process's."""
    if slurm_nodes() < 2:
        pytest.skip("one SLURM node: run `bash scripts/slurm_local.sh start --nodes 2`")
    steps = ["steps=200", "log_every=1", "eval_every=100", "checkpoint_every=0",
             "grad_accum=2", "optim=adamw"]
    job, rdir = signal_mid_run(launch("twonode", sweep_args(tmp_path, data_root, *steps,
                                                            "launcher.nodes=2")), start_s=180)
    [row] = wait_done(tmp_path / "runs", "twonode", timeout=400, release_requeued=True)
    assert row.state.name == RunState.COMPLETED, format_table("twonode", [row])
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "_submitit").rglob("*log.out"))
    assert "resuming" in logs
    summary = store.read_summary(rdir)
    assert summary["data_parallel"] == {"world_size": 2, "replica_max_abs_diff": 0.0}
    shown = subprocess.run(["scontrol", "show", "job", job.split("_")[0]],
                           capture_output=True, text=True).stdout
    assert "NumNodes=2" in shown  # the job really spanned two nodes

    single_cfg = compose_cfg([*TINY, *steps], runs_root=tmp_path / "single",
                             data_root=data_root)
    run(single_cfg)
    two = [r["loss"] for r in store.MetricsLog(rdir / "metrics.jsonl").read()]
    one = [r["loss"] for r in store.MetricsLog(identity.run_dir(single_cfg)
                                               / "metrics.jsonl").read()]
    assert two == pytest.approx(one, rel=1e-4)
