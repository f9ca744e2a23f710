"""Token streams on disk (uint16 memmaps, nanoGPT's format) and deterministic batch sampling.

Corpora:
- `pystdlib`: the Python standard library's own source, read byte-level (vocab 256). Every
  machine has it, so it is the offline default. The text depends on the Python version; its
  SHA-1 goes into meta.json and from there into the run summary.
Prepared corpora live in `<data_root>/<corpus>/{train,val}.bin` + `meta.json`.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import numpy as np
import torch

from tasks.train import store

BYTE_VOCAB = 256


def stdlib_source_files() -> list[Path]:
    """The standard library's .py files in a fixed order, without installed packages or tests."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    files = [
        p for p in root.rglob("*.py")
        if not skip.intersection(p.relative_to(root).parts[:-1])
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def write_token_split(path: Path, tokens: np.ndarray) -> None:
    """Write a uint16 token file atomically (the memmap format every corpus uses)."""
    store.atomic_write(Path(path), lambda f: f.write(tokens.astype(np.uint16).tobytes()))


def prepare_pystdlib(out_dir: Path, max_bytes: int, val_fraction: float) -> dict:
    blob = bytearray()
    for path in stdlib_source_files():
        blob += path.read_bytes() + b"\n"
        if len(blob) >= max_bytes:
            break
    data = np.frombuffer(bytes(blob[:max_bytes]), dtype=np.uint8)
    n_val = int(len(data) * val_fraction)
    write_token_split(out_dir / "train.bin", data[: len(data) - n_val])
    write_token_split(out_dir / "val.bin", data[len(data) - n_val :])
    meta = {
        "corpus": "pystdlib",
        "tokenizer": "bytes",
        "vocab_size": BYTE_VOCAB,
        "train_tokens": int(len(data) - n_val),
        "val_tokens": int(n_val),
        "sha1": hashlib.sha1(bytes(data)).hexdigest(),
        "prepared_with": {"max_bytes": max_bytes, "val_fraction": val_fraction},
    }
    store.write_json(out_dir / "meta.json", meta)
    return meta


def load_corpus(data_root: str | Path, corpus: str, **prepare_kwargs) -> tuple[dict, dict]:
    """Return (splits, meta): splits maps 'train'/'val' to read-only uint16 memmaps.

    The embedded `pystdlib` corpus is prepared on first use (it needs no download); any other
    corpus must have been prepared by scripts/prepare_data.py.
    """
    out_dir = Path(data_root).expanduser().absolute() / corpus
    meta = store.read_json(out_dir / "meta.json")
    if meta is None or (corpus == "pystdlib" and _stale(meta, prepare_kwargs)):
        if corpus != "pystdlib":
            raise FileNotFoundError(
                f"corpus {corpus!r} is not prepared under {out_dir}; "
                f"run scripts/prepare_data.py first"
            )
        meta = prepare_pystdlib(out_dir, **prepare_kwargs)
    splits = {
        split: np.memmap(out_dir / f"{split}.bin", dtype=np.uint16, mode="r")
        for split in ("train", "val")
    }
    return splits, meta


def _stale(meta: dict, prepare_kwargs: dict) -> bool:
    return meta.get("prepared_with") != prepare_kwargs


def sample_windows(
    tokens: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (input, next-token target) windows; positions come from `generator` only."""
    return gather_windows(tokens, window_starts(len(tokens), batch_size, block_size, generator),
                          block_size)


def window_starts(n_tokens: int, batch_size: int, block_size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """The start positions of `batch_size` random windows (drawn apart from their tokens, so
    a process can draw every batch's positions and read only its own batches' tokens)."""
    if n_tokens <= block_size + 1:
        raise ValueError(f"corpus of {n_tokens} tokens is too short for block_size {block_size}")
    return torch.randint(n_tokens - block_size - 1, (batch_size,), generator=generator)


def gather_windows(tokens: np.ndarray, starts: torch.Tensor,
                   block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, next-token target) windows of `block_size` tokens at `starts`."""
    # one fancy-indexing gather of (batch, block + 1) tokens; x and y are views of it
    windows = tokens[starts.numpy()[:, None] + np.arange(block_size + 1)].astype(np.int64)
    windows = torch.from_numpy(windows)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def corpus_summary(meta: dict) -> dict:
    return {k: meta[k] for k in ("corpus", "tokenizer", "vocab_size", "sha1") if k in meta}

