"""Expand a sweep into run configs, composed and validated before anything is submitted.

A sweep is Hydra override syntax: `optim=s3,adamw optim.lr=1e-4,3e-4 seed=range(3) steps=500`
(comma lists, range(), choice() sweep; plain overrides are shared). Its runs are the cartesian
product of the swept overrides, in the order given.

Composing through Hydra costs ~0.1 s a run, too slow for a 200-run sweep. Hydra composes the
defaults list (the group choices) and then applies value overrides to the result, so we do the
same: compose once per distinct set of group choices (kept as a plain, unresolved container),
then apply each run's value overrides to a copy of it. tests/test_sweeps.py checks the result
equals Hydra's own composition.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf

from tasks.train import identity
from tasks.train.epochs import derive_steps, steps_for_epochs
from tasks.train.errors import ConfigError

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


def option_file(group: str, option, extra_conf: tuple[Path, ...] = ()) -> Path:
    """conf/<group>/<option>.yaml, or the first of `extra_conf` that has it: further config
    folders searched after conf/ (a contender's optimizer yaml, sweeps/contender.py), for group
    option files only, read by the fast composition path below."""
    for root in (CONF_DIR, *extra_conf):
        path = root / group / f"{option}.yaml"
        if path.exists():
            return path
    return CONF_DIR / group / f"{option}.yaml"


class Composer:
    """Composes run configs, caching one Hydra composition per set of group choices."""

    def __init__(self, config_name: str = "train", extra_conf: tuple[Path, ...] = ()):
        self.config_name = config_name
        self.extra_conf = tuple(extra_conf)
        self._base: dict[tuple[str, ...], dict] = {}
        self._parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}
        self._live: dict[tuple[str, ...], DictConfig] = {}
        self._primary_keys: set[str] | None = None

    def _compose_groups(self, groups: tuple[str, ...]) -> dict:
        if groups not in self._base:
            swapped = self._swap_groups(groups) if groups else None
            if swapped is None:
                with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                    cfg = compose(config_name=self.config_name, overrides=list(groups))
                swapped = OmegaConf.to_container(cfg, resolve=False)
            self._base[groups] = swapped
        return self._base[groups]

    def _swap_groups(self, groups: tuple[str, ...]) -> dict | None:
        """Hydra composes the defaults list and then the primary config. For plain choices
        (`optim=s3`) of top-level groups whose option files have no defaults list of their
        own, and that the primary config does not set keys in, that is the default
        composition with each chosen group's node replaced by its option file: a file read
        instead of a Hydra composition (~0.2 s each). None where that does not hold; Hydra
        then composes (and reports a bad choice with the valid ones)."""
        if self._primary_keys is None:
            self._primary_keys = set(OmegaConf.load(CONF_DIR / f"{self.config_name}.yaml"))
        data = copy.deepcopy(self._compose_groups(()))
        for choice in groups:
            o = self._parse(choice)
            group, option = o.key_or_group, o.value()
            path = option_file(group, option, self.extra_conf)
            if (o.type != OverrideType.CHANGE or "/" in group or not isinstance(option, str)
                    or group in self._primary_keys or group not in data or not path.exists()):
                return None
            node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            if not isinstance(node, dict) or "defaults" in node:
                return None
            data[group] = node
        return data

    def _parse(self, override: str) -> Override:
        """Hydra's parser, once per distinct override string (runs of a sweep share most)."""
        if override not in self._parsed:
            [self._parsed[override]] = self._parser.parse_overrides([override])
        return self._parsed[override]

    def compose(self, overrides: list[str]) -> DictConfig:
        parsed = [self._parse(o) for o in overrides]
        groups = tuple(o.input_line for o in parsed if _is_group(o))
        data = copy.deepcopy(self._compose_groups(groups))
        for o in parsed:
            if not _is_group(o):
                _apply(data, o)
        cfg = OmegaConf.create(data)
        OmegaConf.set_struct(cfg, True)  # as Hydra leaves it: unknown keys are errors
        return cfg

    def resolve(self, overrides: list[str]) -> dict:
        """The run's config as a plain, resolved container (what jobs receive).

        Fast path: plain value changes are set on one live DictConfig per set of group choices,
        read back resolved, and reset, which avoids building a DictConfig per run (~5 ms, the
        bulk of a 200-run sweep's composition time). Anything else takes `compose`.
        """
        parsed = [self._parse(o) for o in overrides]
        groups = tuple(o.input_line for o in parsed if _is_group(o))
        values = [o for o in parsed if not _is_group(o)]
        if any(o.type != OverrideType.CHANGE or "${" in str(o.value()) for o in values):
            return OmegaConf.to_container(self.compose(overrides), resolve=True)
        plain = self._compose_groups(groups)
        scratch = copy.deepcopy(plain)
        for o in values:  # the same checks and messages as `compose`
            _apply(scratch, o)
        if groups not in self._live:
            self._live[groups] = OmegaConf.create(plain)
        live = self._live[groups]
        try:
            for o in values:
                OmegaConf.update(live, o.key_or_group, o.value(), merge=False)
            return OmegaConf.to_container(live, resolve=True)
        finally:
            for o in values:
                OmegaConf.update(live, o.key_or_group, _get(plain, o.key_or_group), merge=False)


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return copy.deepcopy(data)


def _apply(data: dict, o: Override) -> None:
    """One value override on a plain config container (Hydra's CHANGE / + / ++ / ~ rules)."""
    *parents, leaf = o.key_or_group.split(".")
    node = data
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            if o.type in (OverrideType.ADD, OverrideType.FORCE_ADD) and part not in node:
                node[part] = {}
            else:
                raise ConfigError(f"cannot override {o.key_or_group!r}: "
                                  f"{'.'.join(parents[: i + 1])!r} is not a config node")
        node = node[part]
    if o.type == OverrideType.DEL:
        node.pop(leaf, None)
    elif o.type == OverrideType.CHANGE and leaf not in node:
        groups = f"; the groups: {run_groups()} (choose with group=option)" if not parents \
            else ""
        raise ConfigError(f"cannot override {o.key_or_group!r}: no such key (use "
                          f"+{o.key_or_group}=... to add one). Keys there: {sorted(node)}"
                          f"{groups}")
    elif o.type == OverrideType.ADD and leaf in node:
        raise ConfigError(f"cannot add {o.key_or_group!r}: it exists (use "
                          f"{o.key_or_group}=... or ++{o.key_or_group}=...)")
    else:
        node[leaf] = o.value()


def run_groups() -> list[str]:
    """The config groups a run composes (conf/<group>/; `table` holds table specs, which
    reproduce.py reads: not a run's group)."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "table")


def check_run_overrides(overrides: list[str]) -> None:
    """A command line's overrides, checked as a run composes them (each group choice an option
    of its group, each key one that exists there), before Hydra sees them: Hydra reports a bad
    one with a traceback hint and exit code 1, the scripts with the valid ones and exit 2."""
    check_choices(overrides)
    plain = [o for o in overrides if not o.startswith(("hydra", "+hydra", "~hydra"))]
    if any(o.split("=", 1)[0].lstrip("+~") == "table" for o in plain):
        raise ConfigError("table=... is not a run's setting: a paper table is reproduced with "
                          "`python scripts/reproduce.py TABLE` (one of "
                          f"{sorted(p.stem for p in (CONF_DIR / 'table').glob('*.yaml'))})")
    try:
        first_run = expand(plain)[0]
    except Exception as e:  # Hydra's parse error, with the offending text
        raise ConfigError(f"cannot parse the overrides: {e}") from None
    Composer().compose(first_run)


def check_choices(overrides: list[str]) -> None:
    """Each group choice (`optim=s3`, also in sweep syntax `optim=s3,adamw`) names an option of
    its group: a ConfigError listing the valid ones otherwise, before Hydra composes anything
    (Hydra's own report of it exits 1, which the scripts reserve for failed runs)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:  # Hydra's OverrideParseException, with the offending text
        raise ConfigError(f"cannot parse the overrides: {e}") from None
    for o in parsed:
        group = o.key_or_group
        if group.startswith("hydra") or not (CONF_DIR / group).is_dir() or \
                o.type == OverrideType.DEL:
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if not (CONF_DIR / group / f"{value}.yaml").is_file():
                options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
                raise ConfigError(f"{group}={value}: no such option of the {group} group; "
                                  f"choose one of {options}")


def check_run(run_overrides: list[str], cfg: dict, trains_here: bool = False,
              accepted: set[str] | None = None) -> None:
    """Validate one run's resolved config (and, for runs that train on this machine, its
    device); the error names the run. `accepted` carries the optimizer configs already
    constructed across the runs of one sweep (tasks.train.config.validate_optim)."""
    from tasks.train.config import check_data, validate, validate_device  # imports torch

    try:
        validate(cfg, accepted)
        if trains_here:  # the run trains on this machine: its devices and data are the run's
            validate_device(cfg)
            check_data(cfg)
    except Exception as e:
        raise ConfigError(f"run [{' '.join(run_overrides)}]: {e}") from e


def compose_sweep(overrides: list[str], extra: list[str] = (),
                  validate_runs: bool = True) -> list[tuple[list[str], dict]]:
    """All runs of a sweep (Hydra sweep syntax) as (overrides, resolved config)."""
    return compose_runs(expand([*extra, *overrides]), validate_runs)


def compose_runs(run_overrides_list: list[list[str]], validate_runs: bool = True,
                 extra_conf: tuple[Path, ...] = ()) -> list[tuple[list[str], dict]]:
    """Explicit runs as (overrides, resolved config), validated unless told not to; fails on
    the first bad run, with its overrides in the message, before anything is submitted.
    `extra_conf`: config folders searched after conf/ (a contender's)."""
    composer, accepted = Composer(extra_conf=extra_conf), set()
    runs = []
    for run_overrides in run_overrides_list:
        try:
            cfg = composer.resolve(run_overrides)
            if cfg.get("epochs") is not None and cfg.get("steps") is None:
                # composed again, so that what interpolates ${steps} sees the derived value
                cfg = composer.resolve([*run_overrides, f"steps={steps_for_epochs(cfg)}"])
            else:
                derive_steps(cfg)  # steps given beside epochs must agree with them
        except Exception as e:
            raise ConfigError(f"run [{' '.join(run_overrides)}]: {e}") from e
        if validate_runs:
            check_run(run_overrides, cfg, accepted=accepted)
        runs.append((run_overrides, cfg))
    keys = [identity.run_key(cfg) for _, cfg in runs]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ConfigError(f"the sweep names the same run more than once (run keys "
                          f"{sorted(duplicates)}): check for repeated values")
    return runs
