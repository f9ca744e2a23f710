"""Expand a sweep into run configs, composed and validated before anything is submitted.

A sweep is Hydra override syntax: `optim=s3,adamw optim.lr=1e-4,3e-4 seed=range(3) steps=500`
(comma lists, range(), choice() sweep; plain overrides are shared). Its runs are the cartesian
product of the swept overrides, in the order given.

Composing through Hydra costs ~0.1 s a run, too slow for a 200-run sweep. Hydra composes the
defaults list (the group choices) and then applies value overrides to the result, so we do the
same: compose once per distinct set of group choices, then apply each run's value overrides to
a copy with OmegaConf. tests/test_sweeps.py checks the result equals Hydra's own composition.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

from tasks import store
from tasks.config import ConfigError, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def expand(overrides: list[str]) -> list[list[str]]:
    """Cartesian product of the swept overrides; each run is a list of plain overrides."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    axes = []
    for o in parsed:
        if o.is_sweep_override():
            prefix = _prefix(o)
            axes.append([f"{prefix}{o.key_or_group}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(run) for run in itertools.product(*axes)] if axes else [[]]


def _prefix(o: Override) -> str:
    return {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(
        o.type, "")


def _is_group(o: Override) -> bool:
    key = o.key_or_group
    return "/" in key or (CONF_DIR / key).is_dir()


class Composer:
    """Composes run configs, caching one Hydra composition per set of group choices."""

    def __init__(self, config_name: str = "train"):
        self.config_name = config_name
        self._base: dict[tuple[str, ...], DictConfig] = {}
        self._parser = OverridesParser.create()

    def _compose_groups(self, groups: tuple[str, ...]) -> DictConfig:
        if groups not in self._base:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                self._base[groups] = compose(config_name=self.config_name,
                                             overrides=list(groups))
        return self._base[groups]

    def compose(self, overrides: list[str]) -> DictConfig:
        parsed = self._parser.parse_overrides(list(overrides))
        groups = tuple(o.input_line for o in parsed if _is_group(o))
        cfg = self._compose_groups(groups).copy()
        for o in parsed:
            if _is_group(o):
                continue
            key = o.key_or_group
            exists = OmegaConf.select(cfg, key, default="__missing__") != "__missing__"
            if o.type == OverrideType.DEL:
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                with open_dict(node):
                    node.pop(leaf, None)
                continue
            if o.type == OverrideType.CHANGE and not exists:
                parent = key.rpartition(".")[0]
                node = OmegaConf.select(cfg, parent) if parent else cfg
                valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
                raise ConfigError(f"cannot override {key!r}: no such key (use +{key}=... to "
                                  f"add one). Keys there: {valid}")
            with open_dict(cfg):
                OmegaConf.update(cfg, key, o.value(), merge=False, force_add=True)
        return cfg


def compose_sweep(overrides: list[str],
                  extra: list[str] = ()) -> list[tuple[list[str], DictConfig]]:
    """All runs of a sweep as (overrides, config), each validated; fails on the first bad run
    with its overrides in the message, before anything is submitted."""
    composer = Composer()
    runs = []
    for run_overrides in expand([*extra, *overrides]):
        try:
            cfg = composer.compose(run_overrides)
            validate(cfg)
        except Exception as e:
            raise ConfigError(f"run [{' '.join(run_overrides)}]: {e}") from e
        runs.append((run_overrides, cfg))
    keys = [store.run_key(cfg) for _, cfg in runs]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ConfigError(f"the sweep names the same run more than once (run keys "
                          f"{sorted(duplicates)}): check for repeated values")
    return runs
