"""One run end to end: store layout, summary, statuses, skip/resume, bad input."""

import json
import math
from importlib import metadata

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from tasks import run
from tasks.train import environment, identity, store
from tasks.train.config import ConfigError
from tests.conftest import compose_cfg


def quadratic_cfg(tmp_path, **task_kwargs):
    cfg = compose_cfg(["steps=40", "eval_every=10", "log_every=5", "checkpoint_every=10",
                       "progress=false", "metrics.warmup=5",
                       "optim.lr=0.01", "grad_clip=null"],
                      runs_root=tmp_path / "runs", data_root=tmp_path / "data")
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.QuadraticTask",
                                     "name": "quadratic", **task_kwargs})
    return cfg


def test_default_task_run_writes_the_store(tiny_cfg):
    cfg = tiny_cfg("steps=30", "eval_every=10", "log_every=10")
    summary = run(cfg)
    rdir = identity.run_dir(cfg)
    assert rdir.name == identity.run_key(cfg) and rdir.parent.name == "adamw"
    assert {p.name for p in rdir.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json",
                                                 "ckpt.pt"}
    on_disk = json.loads((rdir / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["steps_done"] == 30
    rows = store.MetricsLog(rdir / "metrics.jsonl").read()
    assert [r["step"] for r in rows] == [10, 20, 30]
    for key in ("loss", "lr", "grad_norm", "update_rms", "update_max", "tokens_per_s"):
        assert all(key in r for r in rows), key
    assert "val_loss" in rows[-1]
    assert on_disk["final"]["train_loss"] == rows[-1]["loss"]
    assert on_disk["final"]["val_loss"] == rows[-1]["val_loss"]
    assert set(on_disk["spikes"]) >= {"spike_count", "spike_rate", "max_spike_ratio",
                                      "sigma_spike_score"}
    assert set(on_disk["convergence"]) >= {"auc_log_loss", "steps_to_target", "tokens_to_target"}
    # loss at init is about ln(256) for a byte-level model, and it goes down
    assert on_disk["initial"]["train_loss"] == pytest.approx(math.log(256), abs=0.2)
    assert on_disk["final"]["train_loss"] < rows[0]["loss"]
    assert OmegaConf.load(rdir / "config.yaml").optim.lr == cfg.optim.lr
    # the run names the code and the libraries that made it
    env = on_disk["environment"]
    assert env["git_commit"] == environment.git_commit() and env["git_commit"]
    assert env["torch"] == torch.__version__
    assert env["libraries"]["hydra-core"] == metadata.version("hydra-core")
    assert set(env["libraries"]) >= {"hydra-core", "omegaconf", "submitit", "wandb",
                                     "transformers", "peft", "datasets", "numpy"}
    assert env["device"] and "cuda" in env and "cudnn" in env
    [attempt] = json.loads((rdir / "env.json").read_text())["attempts"]
    assert attempt["from_step"] == 0 and attempt["git_commit"] == env["git_commit"]


def test_finished_run_is_not_run_again(tiny_cfg):
    cfg = tiny_cfg("steps=10", "eval_every=10")
    first = run(cfg)
    mtime = (identity.run_dir(cfg) / "summary.json").stat().st_mtime_ns
    assert run(cfg) == first
    assert (identity.run_dir(cfg) / "summary.json").stat().st_mtime_ns == mtime


def test_steps_to_target_and_update_stats(tmp_path):
    summary = run(quadratic_cfg(tmp_path))
    assert summary["status"] == "completed"
    evals = summary["evals"]
    reached = [e["step"] for e in evals if e["val_loss"] <= 0.05]
    assert summary["convergence"]["steps_to_target"] == (reached[0] if reached else None)
    rows = store.MetricsLog(identity.run_dir(quadratic_cfg(tmp_path)) / "metrics.jsonl").read()
    # AdamW moves every coordinate by at most about lr per step
    assert all(0 < r["update_max"] <= 1.05 * 0.01 for r in rows)


def test_nan_loss_stops_the_run_as_diverged(tmp_path):
    cfg = quadratic_cfg(tmp_path, nan_at_step=17)
    summary = run(cfg)
    assert summary["status"] == "diverged"
    assert summary["diverged_at"] == 18  # steps are counted 1-based: step index 17 is the 18th
    assert "non-finite" in summary["diverged_reason"]
    assert summary["steps_done"] < 40
    # a diverged run is a result: running it again does nothing
    assert run(cfg)["status"] == "diverged"


def test_failure_is_recorded_then_rerun_resumes(tmp_path, monkeypatch):
    cfg = quadratic_cfg(tmp_path, raise_at_step=25)
    with pytest.raises(RuntimeError, match="boom at step 25"):
        run(cfg)
    rdir = identity.run_dir(cfg)
    summary = store.read_summary(rdir)
    assert summary["status"] == "failed" and "boom" in summary["error"]
    assert "RuntimeError: boom at step 25" in (rdir / "error.txt").read_text()
    assert not store.is_finished(rdir)
    monkeypatch.setenv("OPTBENCH_TEST_NO_RAISE", "1")
    resumed = run(cfg)  # resumes from the step-20 checkpoint
    assert resumed["status"] == "completed" and resumed["steps_done"] == 40
    fresh_cfg = quadratic_cfg(tmp_path / "fresh", raise_at_step=25)
    fresh = run(fresh_cfg)
    assert [e["val_loss"] for e in resumed["evals"]] == [e["val_loss"] for e in fresh["evals"]]
    # each attempt's environment is kept: the failed one from step 0, the resumed from 20
    attempts = json.loads((rdir / "env.json").read_text())["attempts"]
    assert [a["from_step"] for a in attempts] == [0, 20]


def test_run_key_ignores_where_and_how_but_not_what(tmp_path):
    base = compose_cfg([])
    assert identity.run_key(base) == identity.run_key(compose_cfg(["logger=wandb", "sweep=abc",
                                                             "checkpoint_every=7"]))
    assert identity.run_key(base) == identity.run_key(compose_cfg([], runs_root=tmp_path))
    assert identity.run_key(base) != identity.run_key(compose_cfg(["optim.lr=0.002"]))
    assert identity.run_key(base) != identity.run_key(compose_cfg(["seed=1"]))
    assert identity.run_key(base) != identity.run_key(compose_cfg(["schedule=wsd"]))


def test_keys_added_later_leave_earlier_run_keys_alone_at_their_default():
    s3 = compose_cfg(["optim=s3"])
    without = OmegaConf.to_container(s3, resolve=True)
    del without["optim"]["fused"]  # a config from before the key existed
    assert identity.run_key(without) == identity.run_key(s3)
    assert identity.run_key(s3) != identity.run_key(compose_cfg(["optim=s3", "optim.fused=true"]))
    fp8 = compose_cfg(["precision=fp8_emulated"])
    assert identity.run_key(fp8) != identity.run_key(compose_cfg(["precision=fp8_emulated",
                                                            "precision.compute=fp32"]))


@pytest.mark.parametrize("override,key", [
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=0", "optim.lr"),
    ("steps=0", "steps"),
    ("steps=-5", "steps"),
    ("grad_accum=0", "grad_accum"),
    ("schedule.name=exponential", "schedule.name"),
    ("schedule.warmup_steps=10000", "schedule.warmup_steps"),
    ("optim.betas=[0.9,1.5]", "optim.betas"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("grad_clip=-1", "grad_clip"),
    ("metrics.delta=0", "metrics.delta"),
    ("logger=wandb", "logger.mode"),
    ("device=tpu", "device"),
])
def test_bad_values_fail_before_training_naming_the_key(tmp_path, override, key):
    extra = ["logger.mode=sometimes"] if override == "logger=wandb" else []
    cfg = compose_cfg([override, *extra], runs_root=tmp_path / "runs")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        run(cfg)
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize("preset", ["nanogpt", "vision_tiny_resnet"])
def test_batches_made_ahead_in_a_background_thread_are_the_same_batches(tmp_path, data_root,
                                                                         preset):
    """On a GPU the trainer makes the next micro-batch's host half ahead, in a thread: a run
    with it (forced here, on the CPU, unpinned) computes exactly what a run without it does."""
    import threading

    from tasks.train import prefetch
    from tasks.train.assemble import build_run
    from tests.conftest import TINY, compose_cfg

    args = TINY if preset == "nanogpt" else [f"task={preset}", "task.batch_size=4",
                                              "progress=false"]
    cfg = compose_cfg([*args, "steps=6", "grad_accum=3"], data_root=data_root)
    plain = build_run(cfg)[1]
    ahead = build_run(cfg)[1]
    assert plain.prefetch is None  # a CPU device: no thread
    ahead.prefetch = prefetch.Prefetcher(ahead.task, pin=False)
    made_by = []
    host = ahead.task.host_batch

    def recording(step, micro):
        made_by.append(threading.current_thread().name)
        return host(step, micro)

    ahead.task.host_batch = recording
    for step in range(6):
        a, b = plain.train_step(step), ahead.train_step(step)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert sum(name.startswith("batches") for name in made_by) == 17  # all but the first
    ahead.prefetch.close()


@pytest.mark.parametrize("minutes, saved", [(None, [12]), (1e-9, list(range(1, 13)))])
def test_a_wall_clock_cadence_checkpoints_between_step_cadences(tiny_cfg, monkeypatch, minutes,
                                                                  saved):
    """`checkpoint_every_min` saves whenever that many minutes passed since the last save, so
    a time limit loses at most that much; null leaves the step cadence alone."""
    from tasks.train.loop import Trainer

    at: list[int] = []
    original = Trainer.save_checkpoint

    def recording(self):
        at.append(self.state.step)
        original(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", recording)
    cfg = tiny_cfg("steps=12", "checkpoint_every=0", "eval_every=100", "log_every=100")
    with open_dict(cfg):
        cfg.checkpoint_every_min = minutes
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert at == saved


def test_compile_caches_live_under_the_runs_root_unless_set(tiny_cfg, tmp_path, monkeypatch):
    """A requeued job reuses compiled kernels: inductor's and Triton's caches go under the
    runs root (kept between jobs), not /tmp (the node's own); a cache the user set stays."""
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores the original afterwards
        monkeypatch.delenv(name)
    run(tiny_cfg("steps=2", "eval_every=2", "log_every=1"))
    import os

    cache = (tmp_path / "runs").absolute() / "_compile_cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(cache / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/scratch/mine")
    run(tiny_cfg("steps=3", "eval_every=3", "log_every=1"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/scratch/mine"
