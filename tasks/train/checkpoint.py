"""Checkpoints that are verified before they are trusted.

    ckpt.pt            the newest checkpoint          ckpt.pt.sha256        its SHA-256
    ckpt.prev.pt       the one before it              ckpt.prev.pt.sha256

A save streams the checkpoint to a temporary file while hashing it and fsyncs it, then
publishes it in an order that leaves, at every instant, the newest complete checkpoint paired
with its own digest (a crash between any two steps resumes from it):

    1. ckpt.prev.pt.sha256 := the digest of ckpt.pt     (prev's file does not match: unusable,
                                                          while ckpt.pt still is)
    2. ckpt.pt → ckpt.prev.pt                          (the pair moves over whole)
    3. ckpt.pt.sha256 := the new digest                 (no ckpt.pt yet: prev is used)
    4. temporary file → ckpt.pt                         (the new pair is complete)
Each step is an atomic rename followed by an fsync of the directory, and each is fenced: a
process that lost the run's lease (tasks/train/lease.py) stops before it. Temporary files of a save
that a crash interrupted are removed at the run's next start
(`store.remove_leftovers`).

A load checks the digest before unpickling, with `weights_only=True` so that a tampered file
in a shared directory cannot run code; if the newest fails it warns, sets the newest aside as
`ckpt.pt.corrupt` (so the next save keeps the good `prev`), and falls back to `prev`. With no
good checkpoint it raises `CheckpointError` naming the files and the way out.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from tasks.train import store

DISCARD_HINT = ("to discard it and start the run from step 0, run the same command with "
                "discard_bad_checkpoint=true")


class CheckpointError(RuntimeError):
    """No checkpoint of the run can be trusted."""


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every filesystem lets a directory be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_digest(path: Path, hexdigest: str) -> None:
    store.write_text(digest_path(path), hexdigest + "\n")
    _fsync_dir(path.parent)


def _rename(source: Path, target: Path) -> None:
    store.prove_writer(target)  # a writer that lost its run dir publishes nothing
    os.replace(source, target)
    _fsync_dir(target.parent)


def save(path: Path, obj: Any) -> None:
    path = Path(path)
    store.prove_writer(path)  # before gigabytes are streamed, not only before they are published
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=store.TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        previous = previous_path(path)
        current = _read_digest(path) if path.exists() else None
        if current is not None:  # keep the current pair as fallback
            _publish_digest(previous, current)
            _rename(path, previous)
        elif path.exists():  # never published whole (no digest, or a damaged one)
            set_aside(path)
        _publish_digest(path, writer.sha.hexdigest())
        _rename(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 4 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def _read_digest(path: Path) -> str | None:
    """The digest published beside `path`; None when there is none or it is not one."""
    try:
        text = digest_path(path).read_bytes().decode("ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def _load_verified(path: Path) -> Any:
    """The checkpoint at `path`, or an exception that says what is wrong with it."""
    expected = digest_path(path)
    if not expected.exists():
        raise CheckpointError(f"{path} has no digest ({expected.name} missing): it was not "
                              f"completely written")
    want = _read_digest(path)
    if want is None:
        raise CheckpointError(f"{expected} is not a SHA-256 digest: damaged")
    if sha256(path) != want:
        raise CheckpointError(f"{path} does not match its digest {expected.name} (damaged "
                              f"or truncated)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} matches its digest but does not load: "
                              f"{type(e).__name__}: {e}") from e


def exists(path: Path) -> bool:
    return Path(path).exists() or previous_path(Path(path)).exists()


def load(path: Path) -> Any:
    """The newest verified checkpoint (falling back to the previous one, with a warning)."""
    path = Path(path)
    problems = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            obj = _load_verified(candidate)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {candidate} "
                          f"instead (the damaged file is kept as {path.name}.corrupt)")
            set_aside(path)
        return obj
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems) + f". {DISCARD_HINT}")


def set_aside(path: Path) -> None:
    """Move a damaged newest checkpoint (and digest) out of the way, kept for inspection."""
    path = Path(path)
    if path.exists():
        os.replace(path, path.with_name(path.name + ".corrupt"))
    digest_path(path).unlink(missing_ok=True)


def discard(path: Path) -> None:
    """Set every checkpoint of the run aside (`discard_bad_checkpoint=true`)."""
    path = Path(path)
    for candidate in (previous_path(path), path):
        if candidate.exists():
            os.replace(candidate, candidate.with_name(candidate.name + ".discarded"))
        digest_path(candidate).unlink(missing_ok=True)
