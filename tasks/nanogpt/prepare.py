"""Tokenize a text dataset once into the uint16 memmaps training reads.

Documents stream from Hugging Face `datasets` (a hub dataset on a machine with internet, or
local json/text files anywhere), each is encoded with a tiktoken encoding and followed by the
end-of-text token, and ids are appended to `train.bin` / `val.bin`. Every `val_every`-th document
goes to validation (deterministic, needs no length up front). Files are written under temporary
names and renamed at the end, so an interrupted preparation never leaves a half corpus behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from tasks.train import store

HUB = {  # corpus name → load_dataset arguments
    "openwebtext": {"path": "Skylion007/openwebtext", "split": "train"},
    "fineweb": {"path": "HuggingFaceFW/fineweb", "name": "sample-10BT", "split": "train"},
    "c4": {"path": "allenai/c4", "name": "en", "split": "train"},  # Softsign's LLM corpus
}


def documents(path: str, split: str = "train", name: str | None = None,
              data_files=None, text_field: str = "text") -> Iterable[str]:
    import datasets

    stream = datasets.load_dataset(path, name=name, split=split, data_files=data_files,
                                   streaming=True)
    for row in stream:
        yield row[text_field]


def tokenize_to_memmaps(docs: Iterable[str], encoding, out_dir: Path, corpus: str,
                        val_every: int = 2000, max_docs: int | None = None,
                        progress: bool = True) -> dict:
    if encoding.max_token_value >= 2**16:
        raise ValueError(f"encoding {encoding.name} has ids up to {encoding.max_token_value}: "
                         f"they do not fit the uint16 memmap format")
    if val_every < 2:
        raise ValueError(f"val_every must be >= 2, got {val_every}")
    out_dir.mkdir(parents=True, exist_ok=True)
    eot = encoding.eot_token
    tmp = {split: out_dir / f".{split}.bin.partial" for split in ("train", "val")}
    counts = {"train": 0, "val": 0}
    files = {split: open(path, "wb") for split, path in tmp.items()}
    try:
        bar = tqdm(docs, desc=f"tokenizing {corpus}", unit="doc", disable=not progress)
        for i, text in enumerate(bar):
            if max_docs is not None and i >= max_docs:
                break
            ids = encoding.encode_ordinary(text)
            ids.append(eot)
            split = "val" if i % val_every == val_every - 1 else "train"
            files[split].write(np.asarray(ids, dtype=np.uint16).tobytes())
            counts[split] += len(ids)
            if i % 1000 == 0:
                bar.set_postfix(tokens=counts["train"] + counts["val"], refresh=False)
    finally:
        for f in files.values():
            f.close()
    if counts["val"] == 0 or counts["train"] == 0:
        raise ValueError(f"{corpus}: {counts} tokens; need documents in both splits "
                         f"(every {val_every}th goes to val)")
    for split, path in tmp.items():
        os.replace(path, out_dir / f"{split}.bin")
    meta = {"corpus": corpus, "tokenizer": encoding.name, "vocab_size": encoding.n_vocab,
            "eot_token": eot, "train_tokens": counts["train"], "val_tokens": counts["val"],
            "val_every": val_every}
    store.write_json(out_dir / "meta.json", meta)
    return meta
