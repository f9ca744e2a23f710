"""`scripts/prepare_data.py` subcommands for the LoRA math tasks: the hub's math sets as
jsonl with their own field names (tasks/lora/data.py), the generated arithmetic set, Alpaca,
and the offline tables' pretrained tiny Llama base (tasks/lora/base.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.train import store
from tasks.train.preparation import Preparation, PreparationError


def prepare_math(name: str, out_dir: Path) -> str:
    """The dataset's train/test splits as jsonl with its own field names."""
    from tasks.lora.data import DATASETS, write_arith

    if name == "arith":
        write_arith(out_dir)
        return f"prepared arith (generated) under {out_dir}"
    import datasets

    q_field, a_field, _, source = DATASETS[name]
    lines_out = []
    if name == "alpaca":
        from tasks.lora.data import ALPACA_TEST, alpaca_rows

        rows = alpaca_rows(datasets.load_dataset(**source, split="train"))
        for split, part in (("train", rows[:-ALPACA_TEST]), ("test", rows[-ALPACA_TEST:])):
            store.write_text(out_dir / f"{split}.jsonl",
                             "".join(json.dumps(r) + "\n" for r in part))
            lines_out.append(f"prepared alpaca {split}: {len(part):,} examples under {out_dir}")
        return "\n".join(lines_out)
    for split in ("train", "test"):
        try:
            rows = datasets.load_dataset(**source, split=split)
        except ValueError:  # MetaMathQA has no test split, MATH-500 no train split
            lines_out.append(f"{name}: no {split} split")
            continue
        lines = [json.dumps({q_field: r[q_field], a_field: r[a_field]}) + "\n" for r in rows]
        store.write_text(out_dir / f"{split}.jsonl", "".join(lines))
        lines_out.append(f"prepared {name} {split}: {len(lines):,} examples under {out_dir}")
    return "\n".join(lines_out)


def _math(name: str):
    return lambda args, root: prepare_math(name, root / name)


def _base_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=3000, help="pretraining steps")


def _tiny_llama_base(args, root: Path) -> str:
    from tasks.lora import base
    from tasks.nanogpt import data

    if args.steps < 1:
        raise PreparationError(f"--steps must be at least 1, got {args.steps}")
    if not (root / "pystdlib" / "train.bin").exists():  # the corpus it pretrains on
        data.prepare_pystdlib(root / "pystdlib", 4_000_000, 0.05)
    corpus = np.fromfile(root / "pystdlib" / "train.bin", dtype=np.uint16).astype(np.uint8)
    meta = base.build(root / base.NAME, corpus.tobytes(), steps=args.steps)
    return (f"prepared {base.NAME}: {args.steps} steps on pystdlib ({meta['tokens']:,} tokens), "
            f"loss {meta['first_loss']:.3f} → {meta['last_losses_mean']:.3f}, under "
            f"{root / base.NAME}")


PREPARATIONS = [
    *[Preparation(name, f"{name} (from the hub) as jsonl", _math(name))
      for name in ("gsm8k", "metamathqa", "numina", "math", "alpaca")],
    Preparation("arith", "generated GSM8K-format arithmetic (no download)", _math("arith")),
    Preparation("tiny_llama_base", "the offline LoRA tables' base: the tiny Llama pretrained "
                                   "here on pystdlib", _tiny_llama_base, _base_arguments),
]
