"""Checks a task's config runs through before a run dir exists or a sweep submits. Each error
names the key, the bad value and what is allowed (ValueError; the caller adds nothing)."""

from __future__ import annotations


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
