"""The task contract (tasks.train.base.Task), checked for every preset in conf/task/: it is a Task
with the constructor the runner calls, it composes and validates, its cost() answers a plan and
names what it reads; and one preset of every task class trains, stops and resumes to the same
numbers as a run that never stopped. A new preset (or task class) is picked up here without a
line of test code: a class without a trainable preset below fails the coverage test."""

import inspect

import numpy as np
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from tasks import mnist_mlp, run
from tasks.cifar import data as cifar_data
from tasks.lora import data as lora_data
from tasks.train import identity
from tasks.train.assemble import build_run
from tasks.train.base import Cost, Task
from tasks.train.config import validate
from tasks.train.loop import Trainer
from tests.conftest import ROOT, compose_cfg

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
RUN = ["steps=4", "eval_every=2", "log_every=1", "checkpoint_every=2", "progress=false",
       "metrics.warmup=1"]
# Overrides that keep a preset small where it trains here (the preset's own shape otherwise).
SHRINK = {
    "nanogpt_char": ["task.model.n_layer=1", "task.model.n_embd=32", "task.model.n_head=2",
                     "task.model.block_size=32", "task.batch_size=4", "task.eval_batches=2",
                     "task.prepare.max_bytes=200000"],
    "nanogpt_char_small": ["task.eval_batches=2"],
    "cifar10_resnet18": ["task.arch=resnet20", "task.width=0.25", "task.batch_size=8",
                         "task.eval_batch_size=32"],
    "cifar_tiny": ["task.batch_size=16", "task.synthetic_size=[256,64]"],
    "vision_tiny_vit": ["task.batch_size=8", "task.eval_limit=64"],
    "vision_tiny_resnet": ["task.batch_size=8", "task.eval_limit=64"],
    "mnist_mlp": ["task.batch_size=64", "task.hidden=32", "task.eval_batch_size=32"],
    "lora_tiny_arith": ["task.batch_size=2", "task.eval.limit=4", "task.eval.max_new_tokens=8",
                        "optim.weight_decay=0"],
}
# A preset trains here when what it reads is prepared in the test data root and four steps
# cost at most this many FLOPs (seconds on 2 cores); the others are paper-scale presets (their
# data, or their size, is a cluster's) and are composed, validated and planned only.
TRAINS_HERE_FLOPS = 2e10


def trains_here(preset: str, data_root) -> bool:
    cfg = resolved(preset, *RUN, *SHRINK.get(preset, []), data_root=data_root)
    cost = get_class(cfg["task"]["_target_"]).cost(cfg)
    return all(need.ready for need in cost.data) and cost.train_flops <= TRAINS_HERE_FLOPS


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Data in each loader's own on-disk format, small: a fake CIFAR-10, arithmetic."""
    root = tmp_path_factory.mktemp("contract-data")
    layout = cifar_data.LAYOUT["cifar10"]
    rng = np.random.default_rng(0)
    for name in layout[1] + layout[2]:
        x = rng.integers(0, 256, size=(40, 3, 32, 32), dtype=np.uint8)
        cifar_data.write_batches(root / "cifar10" / layout[0], name, x,
                                 rng.integers(0, 10, size=40), layout[3])
    lora_data.write_arith(root / "arith", n_train=200, n_test=20)
    for split, n in (("train", 300), ("test", 60)):  # MNIST's own IDX files, gzipped
        images, labels = mnist_mlp.FILES[split]
        (root / "mnist").mkdir(exist_ok=True)
        mnist_mlp.write_idx(root / "mnist" / f"{images}.gz",
                            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        mnist_mlp.write_idx(root / "mnist" / f"{labels}.gz", rng.integers(0, 10, size=n))
    return root


def resolved(preset: str, *overrides, data_root=None, runs_root=None) -> dict:
    cfg = compose_cfg([f"task={preset}", *overrides], data_root=data_root, runs_root=runs_root)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_keeps_the_contract_and_answers_a_plan(preset, tmp_path):
    cfg = resolved(preset, "steps=10", data_root=tmp_path)
    cls = get_class(cfg["task"]["_target_"])
    assert issubclass(cls, Task) and not inspect.isabstract(cls), cls
    params = inspect.signature(cls).parameters
    for name in ("seed", "device", "data_root", "grad_accum"):  # what the runner passes
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (cls, name)
    validate(cfg)
    cost = cls.cost(cfg)
    assert isinstance(cost, Cost) and cost.params > 0 and cost.train_flops > 0
    assert cost.data == cls.data_needs(cfg) and cost.data  # the plan lists what it reads
    missing = [need for need in cost.data if not need.ready]
    assert all(need.prepare for need in missing)  # with the command that prepares it


@pytest.mark.slow
def test_every_task_class_has_a_preset_that_trains_here(data_root):
    classes = {get_class(resolved(p)["task"]["_target_"]) for p in PRESETS}
    trained = {get_class(resolved(p)["task"]["_target_"]) for p in PRESETS
               if trains_here(p, data_root)}
    assert classes == trained, f"give {classes - trained} a preset small enough to train here"


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_trains_stops_and_resumes_to_the_same_numbers(preset, data_root, tmp_path,
                                                               monkeypatch):
    if not trains_here(preset, data_root):
        pytest.skip("a paper-scale preset: its data or its size is a cluster's")
    overrides = [*RUN, *SHRINK.get(preset, [])]
    whole = run(compose_cfg([f"task={preset}", *overrides], runs_root=tmp_path / "whole",
                            data_root=data_root))
    assert whole["status"] == "completed" and whole["steps_done"] == 4

    cfg = compose_cfg([f"task={preset}", *overrides], runs_root=tmp_path / "stopped",
                      data_root=data_root)
    real_step = Trainer.train_step

    def dies_at_step_3(self, step, time_optimizer=True):
        if step == 3:
            raise RuntimeError("stopped at step 3")
        return real_step(self, step, time_optimizer)

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "train_step", dies_at_step_3)
        with pytest.raises(RuntimeError, match="stopped at step 3"):
            run(cfg)
    resumed = run(cfg)  # from the checkpoint at step 2
    attempts = (identity.run_dir(cfg) / "env.json").read_text()
    assert '"from_step": 2' in attempts
    assert resumed["evals"] == whole["evals"]
    assert resumed["final"]["train_loss"] == whole["final"]["train_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["nanogpt_char", "cifar_tiny", "lora_tiny_arith"])
def test_rows_of_a_table_share_seeds(preset, data_root):
    """What pairing the rows of a table by seed rests on: for a seed, two optimizers see the
    same initial model, the same batches and the same evaluation; another seed does not."""
    def built(optim, seed):
        cfg = compose_cfg([f"task={preset}", *RUN, *SHRINK.get(preset, []), f"optim={optim}",
                           f"seed={seed}"], data_root=data_root)
        task, trainer, _ = build_run(cfg)
        return task

    a, b, other = built("adamw", 1), built("signum", 1), built("adamw", 2)
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(state_a[k], other.model.state_dict()[k]) for k in state_a)
    for step in range(3):
        assert _same(a.train_batch(step, 0), b.train_batch(step, 0))
    assert not _same(a.train_batch(0, 0), other.train_batch(0, 0))
    with torch.no_grad():
        assert a.evaluate(a.model) == b.evaluate(a.model)  # the same eval set


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    return x == y
