"""The real wandb client, offline: what it wrote must match the local store."""

import json

import pytest

from tasks import run
from tasks.train import identity
from tests import wandb_records


def offline_run_file(rdir):
    [path] = list(rdir.glob("wandb/offline-run-*/run-*.wandb"))
    return path


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no cached key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return monkeypatch


@pytest.mark.slow
def test_offline_run_mirrors_the_store(tiny_cfg, wandb_env):
    wandb_env.setenv("WANDB_MODE", "offline")
    cfg = tiny_cfg("logger=wandb", "steps=20", "eval_every=10", "log_every=5", "sweep=lr-sweep")
    summary = run(cfg)
    rdir = identity.run_dir(cfg)
    records = wandb_records.read_records(offline_run_file(rdir))
    info = wandb_records.run_info(records)
    assert info.run_id == identity.run_key(cfg)
    assert info.run_group == "lr-sweep"
    config = {i.key: json.loads(i.value_json) for i in info.config.update}
    assert config["optim"]["lr"] == cfg.optim.lr and config["steps"] == 20
    history = wandb_records.history(records)
    assert [h["step"] for h in history] == [5, 10, 15, 20]
    assert history[-1]["loss"] == summary["final"]["train_loss"]
    mirrored = wandb_records.summary(records)
    assert mirrored["final_train_loss"] == summary["final"]["train_loss"]
    assert mirrored["final_val_loss"] == summary["final"]["val_loss"]
    assert mirrored["status"] == "completed"
    assert mirrored["spike_count"] == summary["spikes"]["spike_count"]


def test_online_without_key_falls_back_to_offline(tiny_cfg, wandb_env):
    cfg = tiny_cfg("logger=wandb", "logger.mode=online", "steps=5", "eval_every=5")
    with pytest.warns(UserWarning, match="no W&B API key"):
        summary = run(cfg)
    assert summary["status"] == "completed"
    assert offline_run_file(identity.run_dir(cfg)).exists()


def test_api_key_is_never_written(tiny_cfg, wandb_env):
    secret = "0123456789abcdef0123456789abcdef01234567"
    wandb_env.setenv("WANDB_API_KEY", secret)
    cfg = tiny_cfg("logger=wandb", "logger.mode=offline", "steps=5", "eval_every=5")
    run(cfg)
    for path in identity.run_dir(cfg).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_broken_client_never_crashes_the_run(tiny_cfg, wandb_env, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = tiny_cfg("logger=wandb", "logger.mode=offline", "steps=5", "eval_every=5")
    with pytest.warns(UserWarning, match="continuing without W&B"):
        assert run(cfg)["status"] == "completed"


@pytest.mark.slow
def test_online_with_a_key_and_no_network_logs_offline_within_seconds(tiny_cfg, wandb_env):
    """A key but no reachable server (a closed local port): the mirror gives up after
    logger.init_timeout and logs offline, so nothing is lost and the run is not held up."""
    import time

    wandb_env.setenv("WANDB_API_KEY", "x" * 40)
    wandb_env.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    cfg = tiny_cfg("logger=wandb", "logger.mode=online", "logger.init_timeout=3", "steps=5",
                   "eval_every=5")
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="logging offline instead"):
        summary = run(cfg)
    assert time.perf_counter() - t0 < 60
    assert summary["status"] == "completed"
    records = wandb_records.read_records(offline_run_file(identity.run_dir(cfg)))
    assert [h["step"] for h in wandb_records.history(records)] == [5]
