"""Checks a task's config runs through before a run dir exists or a sweep submits. Each error
names the key, the bad value and what is allowed (ValueError; the caller adds nothing)."""

from __future__ import annotations

import re

F32_MAX = 3.4028234663852886e38  # the largest float32: a parameter set past it is inf


def _fail(key: str, value, allowed: str) -> None:
    raise ValueError(f"{key} must be {allowed}, got {value!r}")


def integer(cfg: dict, key: str, minimum: int = 1, prefix: str = "task.") -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(prefix + key, value, f"an integer >= {minimum}")
    return value


def number(cfg: dict, key: str, low: float, high: float, *, low_open: bool = False,
           high_open: bool = True, prefix: str = "task.") -> float:
    value = cfg.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        (low < value if low_open else low <= value) and
        (value < high if high_open else value <= high))
    if not ok:
        interval = ("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")
        _fail(prefix + key, value, f"a number in {interval}")
    return value


def one_of(cfg: dict, key: str, allowed, prefix: str = "task."):
    value = cfg.get(key)
    if value not in allowed:
        _fail(prefix + key, value, f"one of {list(allowed)}")
    return value


def booleans(section: str, cfg: dict, defaults: dict) -> None:
    """Every key whose default is a bool holds a bool: `nesterov=maybe` is a string, which
    Python would read as true without saying so."""
    for key, default in defaults.items():
        if isinstance(default, bool) and key in cfg and not isinstance(cfg[key], bool):
            _fail(f"{section}.{key}" if section else key, cfg[key], "true or false")


def known_keys(section: str, cfg: dict, readable) -> None:
    """Every key of the config section `section` is one that its reader reads: a key nothing
    reads (a typo such as `+stpes=5`, or a key of another choice of the group) would be
    accepted and silently change nothing but the run's identity."""
    unread = sorted(set(cfg) - set(readable))
    if unread:
        where = f"{section}." if section else ""
        raise ValueError(f"{where}{unread[0]} is not read by anything"
                         + (f" (nor {', '.join(where + k for k in unread[1:])})"
                            if len(unread) > 1 else "")
                         + f"; the keys {section or 'a run config'} can hold: "
                         + ", ".join(sorted(readable)))


DATA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def data_name(value, what: str) -> str:
    """A name that becomes one folder under the data root (`--name`, `task.corpus`): letters,
    digits, '.', '_' and '-', not starting with a dot, no separators, so that it cannot name a
    place outside the data root (`../x`, `/abs`)."""
    if not isinstance(value, str) or not DATA_NAME.fullmatch(value):
        _fail(what, value, "a name of letters, digits, '.', '_' and '-' (not starting with "
                           "'.', no '/'): it names one folder under the data root")
    return value
