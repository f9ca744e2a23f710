"""Run lengths and schedules a paper states in its own units: epochs (steps derived from the
dataset's size, so a smaller long-tailed set trains for the same epochs) and the Muon family's
momentum warm-up."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from sweeps.compose import compose_runs
from tasks.cifar import data as cifar_data
from tasks.train import identity
from tasks.train.epochs import check_loaded, derive_steps
from tasks.train.errors import ConfigError
from tasks.train.schedule import build_scheduler
from tests.conftest import compose_cfg


def _steps(*overrides):
    [(_, cfg)] = compose_runs([list(overrides)])
    return cfg


def test_epochs_derive_steps_from_each_dataset_size():
    base = ["task=cifar10_longtail", "steps=null", "epochs=200", "optim=softsignum"]
    for k in (1, 100):
        cfg = _steps(*base, f"task.imbalance={k}")
        images = sum(cifar_data.long_tail_counts(5000, 10, k))
        assert cfg["steps"] == 200 * (images // 128)
        assert cfg["optim"]["total_steps"] == cfg["steps"]  # what interpolates steps sees it
    assert _steps(*base, "task.imbalance=100")["steps"] < _steps(*base, "task.imbalance=1")["steps"]
    # grad_accum: whole epochs of micro-batches, rounded up to whole steps
    assert _steps(*base, "task.imbalance=1", "grad_accum=3")["steps"] == math.ceil(200 * 390 / 3)
    lora = _steps("task=qlora_llama3_8b_instruct_gsm8k", "steps=null", "epochs=3", "grad_accum=4")
    assert lora["steps"] == math.ceil(3 * (7473 // 4) / 4) == 1401


def test_epochs_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"steps=600 contradicts epochs=2 .*set steps=null"):
        _steps("task=cifar_tiny", "epochs=2")
    with pytest.raises(ConfigError, match="has no epochs .* set steps instead"):
        _steps("task=nanogpt_char", "steps=null", "epochs=1")
    with pytest.raises(ConfigError, match="size of 'numina' is not pinned"):
        _steps("task=lora_qwen7b_numina", "steps=null", "epochs=1")
    with pytest.raises(ConfigError, match="epochs must be null or a number > 0, got -1"):
        _steps("task=cifar_tiny", "steps=null", "epochs=-1")


def test_the_runner_derives_the_same_steps_and_key_as_a_sweep():
    overrides = ["task=cifar_tiny", "steps=null", "epochs=2", "task.imbalance=10"]
    cfg = compose_cfg(overrides)
    derive_steps(cfg)
    [(_, swept)] = compose_runs([overrides])
    assert cfg.steps == swept["steps"] and identity.run_key(cfg) == identity.run_key(swept)
    check_loaded(cfg, len(cifar_data.long_tail_indices(
        cifar_data.synthetic(10, 5000, 1000, seed=0)[1], 10, 10.0, seed=0)))
    with pytest.raises(ConfigError, match="derived for .* training examples but the prepared"):
        check_loaded(cfg, 17)
    # runs without epochs keep the keys they had
    plain = compose_cfg(["task=cifar_tiny"])
    assert "epochs" not in identity.identity_dict(plain)


def _muon_optimizer():
    from tasks.train.assemble import build_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 2))
    cfg = compose_cfg(["optim=muon", "optim.momentum=0.95"])
    return build_optimizer(cfg.optim, model)


def test_momentum_warmup_rises_linearly_and_resumes_exactly():
    sched_cfg = OmegaConf.create({"name": "constant", "warmup_fraction": 0.0, "warmup_steps": None,
                                  "min_lr_ratio": 1.0, "momentum_warmup_steps": 4,
                                  "momentum_warmup_start": 0.85})
    opt = _muon_optimizer()
    sched = build_scheduler(opt, sched_cfg, 10)
    matrix = [g for g in opt.param_groups if g["use_matrix"]][0]
    aux = [g for g in opt.param_groups if not g["use_matrix"]]
    seen = []
    for _ in range(6):
        seen.append(matrix["momentum"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.85, 0.875, 0.9, 0.925, 0.95, 0.95])
    assert all("momentum_target" not in g for g in aux)  # the aux Adam is left alone
    # resume at step 2: the momentum is a function of the restored step count
    state, opt_state = sched.state_dict(), opt.state_dict()
    opt2 = _muon_optimizer()
    opt2.load_state_dict(opt_state)
    sched2 = build_scheduler(opt2, sched_cfg, 10)
    sched2.load_state_dict(state)
    assert [g for g in opt2.param_groups if g["use_matrix"]][0]["momentum"] == 0.95
    with pytest.raises(ValueError, match="needs an optimizer of the Muon family"):
        model = torch.nn.Linear(2, 2)
        build_scheduler(torch.optim.AdamW(model.parameters()), sched_cfg, 10)
    with pytest.raises(ConfigError, match=r"momentum_warmup_start must be a number in \[0, 1\)"):
        _steps("optim=muon", "schedule.momentum_warmup_steps=3")
