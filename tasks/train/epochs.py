"""Epoch-based run lengths: `epochs=E steps=null` trains for E whole passes over the training set
at whatever size it has (a long-tailed CIFAR at imbalance 100 holds a quarter of the images of
the balanced one), so a paper's "200 epochs" stays 200 epochs across a sweep of dataset sizes.

    steps = ceil(E × (training examples // batch_size) / grad_accum)

An epoch is the task's own: the whole micro-batches of one permutation (the last partial batch is
dropped). The example count comes from the task class (`train_examples`, from the dataset's
definition, not from what is on disk), so a plan on a login node and the job on a GPU node derive
the same steps and the same run key; the runner checks the loaded data has that count.
"""

from __future__ import annotations

import math

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from tasks.train.errors import ConfigError


def micro_batches_per_epoch(task_cfg: dict) -> int:
    cls = get_class(task_cfg["_target_"])
    if not hasattr(cls, "train_examples"):
        raise ConfigError(f"epochs: task {task_cfg.get('name')!r} has no epochs (it streams "
                          f"tokens); set steps instead")
    try:
        examples = cls.train_examples(task_cfg)
    except (ValueError, KeyError) as e:
        raise ConfigError(str(e)) from e
    if examples < task_cfg["batch_size"]:
        raise ConfigError(f"epochs: task.batch_size {task_cfg['batch_size']} exceeds the "
                          f"{examples} training examples")
    return examples // task_cfg["batch_size"]


def steps_for_epochs(cfg) -> int:
    epochs = cfg.get("epochs")
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
        raise ConfigError(f"epochs must be null or a number > 0, got {epochs!r}")
    return math.ceil(epochs * micro_batches_per_epoch(_plain(cfg["task"])) / cfg["grad_accum"])


def derive_steps(cfg: dict | DictConfig):
    """Set `steps` from `epochs` where `epochs` is set (in place; returns cfg). Idempotent: a
    config whose steps were derived already passes; steps that contradict epochs are an
    error that says which to drop. On a resolved container, values interpolated from `steps`
    (`total_steps: ${steps}`) were resolved without it: compose such configs again with
    `steps=<steps_for_epochs(cfg)>` instead (sweeps.compose does)."""
    if cfg.get("epochs") is None:
        return cfg
    derived = steps_for_epochs(cfg)
    if cfg.get("steps") is None:
        cfg["steps"] = derived
    elif cfg["steps"] != derived:
        raise ConfigError(f"steps={cfg['steps']} contradicts epochs={cfg['epochs']:g} (= "
                          f"{derived} steps at this batch size); set steps=null to train by "
                          f"epochs, or epochs=null to train by steps")
    return cfg


def check_loaded(cfg, examples: int) -> None:
    """The data a run loaded has the size its steps were derived from."""
    if cfg.get("epochs") is None:
        return
    expected = get_class(cfg["task"]["_target_"]).train_examples(_plain(cfg["task"]))
    if examples != expected:
        raise ConfigError(f"epochs={cfg['epochs']:g}: the steps were derived for {expected} "
                          f"training examples but the prepared data holds {examples}; "
                          f"re-prepare the data or set steps instead of epochs")


def _plain(node) -> dict:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node
