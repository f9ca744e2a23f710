"""The config tree composes for every choice, and Hydra's own errors stay helpful."""

import re
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from tasks.train import config as run_config
from tasks.train.schedule import lr_multiplier
from tests.conftest import ROOT, compose_cfg, load_script

GROUPS = {g: sorted(p.stem for p in (ROOT / "conf" / g).glob("*.yaml"))
          for g in ("optim", "task", "schedule", "precision", "logger")}


@pytest.mark.parametrize("group,choice", [(g, c) for g, cs in GROUPS.items() for c in cs])
def test_every_choice_composes_and_validates(group, choice):
    cfg = compose_cfg([f"{group}={choice}"])
    run_config.validate(cfg)


def test_unknown_choice_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["optim=adamx"])
    assert "adamw" in str(err.value)


@pytest.mark.slow
def test_cli_bad_lr_fails_fast_naming_the_key(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "optim=adamw",
                          "optim.lr=-1", f"runs_root={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "optim (adamw): Invalid optim.lr: -1 (must be a finite number > 0)" in out.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["cosine", "linear", "wsd", "constant"])
def test_schedule_shapes(name):
    kw = dict(name=name, total_steps=100, warmup_steps=10, min_lr_ratio=0.1, decay_fraction=0.2)
    assert lr_multiplier(0, **kw) == pytest.approx(0.1)  # warm-up starts at 1/warmup
    assert lr_multiplier(9, **kw) == pytest.approx(1.0)
    assert lr_multiplier(10, **kw) == pytest.approx(1.0)
    end = lr_multiplier(100, **kw)
    assert end == pytest.approx(1.0 if name == "constant" else 0.1)
    mid = lr_multiplier(55, **kw)
    expected = {"cosine": 0.1 + 0.9 * 0.5, "linear": 0.1 + 0.9 * 0.5, "wsd": 1.0,
                "constant": 1.0}[name]
    assert mid == pytest.approx(expected)
    if name == "wsd":  # decay over the last 20 steps
        assert lr_multiplier(79, **kw) == 1.0
        assert lr_multiplier(90, **kw) == pytest.approx(0.1 + 0.9 * 0.5)


@pytest.mark.parametrize("args,message", [
    (["optim=adamx"], r"optim=adamx: no such option of the optim group; choose one of \[.*'adamw'"),
    (["optim=s3,adamx", "-m"], r"optim=adamx: no such option"),
    (["+stpes=5"], r"stpes is not read by anything; the keys a run config can hold: .*steps"),
    (["launcher=slurm"], r"train.py trains one run here, in this process, and reads no launcher "
                         r"settings \(got launcher=slurm\); .*scripts/sweep.py launch NAME"),
    (["launcher.tasks_per_node=2"], r"\(got launcher.tasks_per_node=2\)"),
    (["parallel=fsdp"], r"parallel=fsdp shards over data-parallel processes, and train.py "
                        r"without torchrun runs one; .*`torchrun --nproc-per-node=N"),
    (["optim.lr=inf"], r"optim \(adamw\): Invalid optim.lr: inf \(must be a finite number > 0\)"),
    (["grad_clip=abc"], r"grad_clip must be null or a finite number > 0, got 'abc'"),
    (["task=nonsmooth", "task.dim=100000000000"], r"needs at least 800 GB"),
], ids=["unknown-choice", "unknown-choice-in-a-multirun", "unread-key", "slurm", "ddp",
        "fsdp-in-one-process", "lr-inf", "clip-text", "too-big-for-this-machine"])
def test_cli_refuses_with_exit_2_before_anything_exists(tmp_path, monkeypatch, capsys, args,
                                                        message):
    """scripts/train.py's command line, in this process (a fresh interpreter costs seconds of
    imports a case); test_cli_bad_lr_fails_fast_naming_the_key runs the real process."""
    script = load_script("train")
    monkeypatch.setattr(sys, "argv", ["train.py", *args, f"runs_root={tmp_path / 'runs'}"])
    with pytest.raises(SystemExit) as stopped:
        script.cli()
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2, stderr
    assert re.search(message, stderr), stderr
    assert not (tmp_path / "runs").exists()


def test_the_run_schema_is_the_top_level_of_train_yaml():
    """RUN_KEYS (what the runner reads) and conf/train.yaml (what it offers) agree."""
    cfg = compose_cfg([])
    assert set(cfg) == set(run_config.RUN_KEYS) - {"hydra"}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_run_without_cuda_fails_before_any_run_dir_naming_the_torch_build(
        tmp_path, monkeypatch, capsys):
    import torch

    script = load_script("train")
    monkeypatch.setattr(sys, "argv", ["train.py", "device=cuda", f"runs_root={tmp_path / 'runs'}"])
    with pytest.raises(SystemExit) as stopped:
        script.cli()
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2, stderr
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    assert "device='cuda' but CUDA is not available" in stderr and build in stderr
    assert "nvidia-smi" in stderr and "device=cpu" in stderr
    assert not (tmp_path / "runs").exists()


def test_a_job_given_gpus_never_falls_back_to_cpu(monkeypatch):
    """device=auto picks the CPU only when the job asked for no GPU: given GPUs (the launcher's
    gpus_per_node, or SLURM's record of them) and no usable CUDA, it stops instead of training
    on one CPU core for the whole time limit."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        monkeypatch.delenv(var, raising=False)
    run_config.validate_device({"device": "auto", "launcher": {"gpus_per_node": 0}})
    with pytest.raises(run_config.ConfigError, match=r"device=auto and the job was given 2 GPU"):
        run_config.validate_device({"device": "auto", "launcher": {"gpus_per_node": 2}})
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1,2,3")  # a SLURM job given 4 GPUs
    with pytest.raises(run_config.ConfigError, match=r"given 4 GPU\(s\) but CUDA is not"):
        run_config.validate_device({"device": "auto", "launcher": {}})


@pytest.mark.slow
def test_validating_an_optimizer_imports_no_compiler():
    """Composing and checking a sweep's runs builds each optimizer config once to run its
    constructor's checks; on no parameters, so torch.optim never imports torch._dynamo (1.2 s
    a launch, where nothing compiles). A bad value is still refused by the constructor."""
    code = ("import sys\n"
            "from tasks.train import config\n"
            "from tests.conftest import compose_cfg\n"
            "config.validate(compose_cfg(['optim=s3']))\n"
            "config.validate(compose_cfg(['optim=muon']))\n"
            "try:\n"
            "    config.validate(compose_cfg(['optim=muon', 'optim.aux_eps=-1']))\n"
            "except config.ConfigError as e:\n"
            "    print('refused:', e)\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused: optim (muon): Invalid aux_eps: -1" in out.stdout
    assert out.stdout.strip().endswith("no dynamo")
