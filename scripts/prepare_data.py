"""Prepare corpora once, before training (training jobs never download).

    python scripts/prepare_data.py pystdlib [--max-bytes N] [--val-fraction F]
    python scripts/prepare_data.py text --input FILE --name NAME [--val-fraction F]
    python scripts/prepare_data.py cifar10 | cifar100      (downloads through torchvision)
    python scripts/prepare_data.py openwebtext | fineweb | c4   (streams the hub dataset, GPT-2 BPE)
    python scripts/prepare_data.py hf --path json --data-files F.jsonl --name NAME
                                   [--text-field text] [--max-docs N] [--val-every 2000]
    python scripts/prepare_data.py gsm8k | metamathqa | numina | math | arith   (math;
                                   arith is generated here, no download)
    python scripts/prepare_data.py tiny_llama_base [--steps 3000]   (the offline LoRA tables'
                                   base: the tiny Llama pretrained here on pystdlib;
                                   tasks/lora/base.py)
    python scripts/prepare_data.py imagenet | imagenette --source DIR [--size S] [--resize R]
                                   [--workers N]   (an ImageFolder tree: DIR/train, DIR/val)
    python scripts/prepare_data.py graphland NAME --source DIR [--split RL|RH|TH]
                                   (a GraphLand dataset folder, as published on Zenodo)

ImageNet and ImageNette are read from an ImageFolder tree you have (nothing is downloaded: the
ImageNet licence requires your own copy; ImageNette is fastai's imagenette2 archive) and written
as uint8 arrays of resized centre crops, `<data_root>/<name>/{train,val}_{images,labels}.npy`
and `meta.json` (tasks/vision/data.py).

The first two write byte-level uint16 memmaps `<data_root>/<name>/{train,val}.bin` and
`meta.json`, the format every nanoGPT corpus uses; train with `task.corpus=<name>`. CIFAR lands
as the official pickle batches under `<data_root>/cifar10/` (or cifar100/), which the CIFAR task
reads.
`data_root` is `$OPTBENCH_DATA` or `data/`, or `--data-root`.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.nanogpt import data  # noqa: E402
from tasks.train import checks, store  # noqa: E402


def prepare_text(path: Path, out_dir: Path, val_fraction: float) -> dict:
    raw = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    if len(raw) < 1000:
        raise SystemExit(f"error: {path} has {len(raw)} bytes; a corpus needs at least 1000")
    n_val = max(int(len(raw) * val_fraction), 1)
    data.write_token_split(out_dir / "train.bin", raw[:-n_val])
    data.write_token_split(out_dir / "val.bin", raw[-n_val:])
    meta = {"corpus": out_dir.name, "tokenizer": "bytes", "vocab_size": data.BYTE_VOCAB,
            "train_tokens": int(len(raw) - n_val), "val_tokens": n_val,
            "source": str(Path(path).absolute()),
            "sha1": hashlib.sha1(raw.tobytes()).hexdigest()}
    store.write_json(out_dir / "meta.json", meta)
    return meta


def prepare_math(name: str, out_dir: Path) -> None:
    """The dataset's train/test splits as jsonl with its own field names (tasks/lora/data.py)."""
    from tasks.lora.data import DATASETS, write_arith

    if name == "arith":
        write_arith(out_dir)
        print(f"prepared arith (generated) under {out_dir}")
        return
    import datasets

    q_field, a_field, _, source = DATASETS[name]
    if name == "alpaca":
        from tasks.lora.data import ALPACA_TEST, alpaca_rows

        rows = alpaca_rows(datasets.load_dataset(**source, split="train"))
        for split, part in (("train", rows[:-ALPACA_TEST]), ("test", rows[-ALPACA_TEST:])):
            store.write_text(out_dir / f"{split}.jsonl",
                             "".join(json.dumps(r) + "\n" for r in part))
            print(f"prepared alpaca {split}: {len(part):,} examples under {out_dir}")
        return
    for split in ("train", "test"):
        try:
            rows = datasets.load_dataset(**source, split=split)
        except ValueError:  # MetaMathQA has no test split, MATH-500 no train split
            print(f"{name}: no {split} split")
            continue
        lines = [json.dumps({q_field: r[q_field], a_field: r[a_field]}) + "\n" for r in rows]
        store.write_text(out_dir / f"{split}.jsonl", "".join(lines))
        print(f"prepared {name} {split}: {len(lines):,} examples under {out_dir}")


# (stored crop, shorter side before it): ImageNette as the SMuon authors' Resize(256) +
# CenterCrop(224); ImageNet keeps a 256-px crop for random crops to 224
IMAGE_DEFAULTS = {"imagenet": (256, 292), "imagenette": (224, 256)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", choices=["pystdlib", "text", "cifar10", "cifar100",
                                           "openwebtext", "fineweb", "c4", "hf", "gsm8k",
                                           "metamathqa", "numina", "math", "arith", "alpaca",
                                           "imagenet", "imagenette", "graphland", "mnist",
                                           "fashion-mnist", "tiny_llama_base"])
    parser.add_argument("dataset", nargs="?", help="graphland: the dataset (e.g. tolokers-2)")
    parser.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA", "data"))
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--max-bytes", type=int, default=4_000_000, help="pystdlib only")
    parser.add_argument("--input", type=Path, help="text: the file to read")
    parser.add_argument("--name", help="text, hf: the corpus name (task.corpus=NAME)")
    parser.add_argument("--path", help="hf: load_dataset path (a hub id, or json / text)")
    parser.add_argument("--data-files", nargs="*", help="hf: local files for json / text")
    parser.add_argument("--text-field", default="text", help="hf: the column holding text")
    parser.add_argument("--encoding", default="gpt2", help="tiktoken encoding (BPE corpora)")
    parser.add_argument("--val-every", type=int, default=2000,
                        help="BPE corpora: every Nth document goes to validation")
    parser.add_argument("--max-docs", type=int, default=None, help="BPE corpora: stop after N")
    parser.add_argument("--source", type=Path, help="imagenet, imagenette: the ImageFolder root; "
                        "mnist, fashion-mnist: a folder of the four IDX files (else downloaded)")
    parser.add_argument("--size", type=int, default=None,
                        help="images: stored centre-crop size (imagenet 256, imagenette 224)")
    parser.add_argument("--resize", type=int, default=None,
                        help="images: shorter side before the crop (imagenet 292, imagenette 256)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="images: decoding processes")
    parser.add_argument("--split", default="RL", help="graphland: RL, RH or TH")
    parser.add_argument("--steps", type=int, default=3000,
                        help="tiny_llama_base: pretraining steps")
    args = parser.parse_args()
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.name is not None:
        try:
            checks.data_name(args.name, "--name")
        except ValueError as e:
            parser.error(str(e))
    root = Path(args.data_root).expanduser().absolute()
    if args.corpus in ("cifar10", "cifar100"):
        import torchvision

        cls = torchvision.datasets.CIFAR10 if args.corpus == "cifar10" else \
            torchvision.datasets.CIFAR100
        for train in (True, False):  # downloads and extracts the archive once, checks md5
            cls(root=str(root / args.corpus), train=train, download=True)
        print(f"prepared {args.corpus} under {root / args.corpus}")
        return
    if args.corpus in ("mnist", "fashion-mnist"):
        from tasks.mnist_mlp import prepare_idx_dataset

        try:
            counts = prepare_idx_dataset(args.corpus, root / args.corpus, args.source)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from e
        print(f"prepared {args.corpus}: {counts} images under {root / args.corpus}")
        return
    if args.corpus == "graphland":
        from tasks.graph.data import DATASETS, SPLITS, prepare_graphland

        if args.dataset not in DATASETS:
            parser.error(f"graphland needs a dataset name, one of {list(DATASETS)}; got "
                         f"{args.dataset!r}")
        if args.split not in SPLITS:
            parser.error(f"--split must be one of {list(SPLITS)}, got {args.split!r}")
        if args.source is None or not args.source.is_dir():
            parser.error(f"graphland needs --source DIR, the dataset's unzipped folder (got "
                         f"{args.source})")
        try:
            meta = prepare_graphland(args.source, root / "graphland" / args.dataset, args.split)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from e
        print(f"prepared graphland {args.dataset} ({args.split}): {meta['nodes']:,} nodes, "
              f"{meta['edges']:,} edges, {meta['features']} features, {meta['classes']} "
              f"classes under {root / 'graphland' / args.dataset}")
        return
    if args.corpus in IMAGE_DEFAULTS:
        from tasks.vision.data import prepare_image_folder

        if args.source is None or not (args.source / "train").is_dir():
            parser.error(f"{args.corpus} needs --source DIR with DIR/train and DIR/val class "
                         f"folders (got {args.source})")
        size, resize = IMAGE_DEFAULTS[args.corpus]
        meta = prepare_image_folder(args.source, root / args.corpus, args.size or size,
                                    args.resize or resize, workers=args.workers)
        counts = {split: v["images"] for split, v in meta["splits"].items()}
        print(f"prepared {args.corpus}: {counts} images of {meta['size']} px, "
              f"{len(meta['classes'])} classes, under {root / args.corpus}")
        return
    if args.corpus == "tiny_llama_base":
        from tasks.lora import base

        if args.steps < 1:
            parser.error(f"--steps must be at least 1, got {args.steps}")
        if not (root / "pystdlib" / "train.bin").exists():  # the corpus it pretrains on
            data.prepare_pystdlib(root / "pystdlib", args.max_bytes, args.val_fraction)
        corpus = np.fromfile(root / "pystdlib" / "train.bin", dtype=np.uint16).astype(np.uint8)
        meta = base.build(root / base.NAME, corpus.tobytes(), steps=args.steps)
        print(f"prepared {base.NAME}: {args.steps} steps on pystdlib ({meta['tokens']:,} "
              f"tokens), loss {meta['first_loss']:.3f} → {meta['last_losses_mean']:.3f}, under "
              f"{root / base.NAME}")
        return
    if args.corpus in ("gsm8k", "metamathqa", "numina", "math", "arith", "alpaca"):
        prepare_math(args.corpus, root / args.corpus)
        return
    if args.corpus in ("openwebtext", "fineweb", "c4", "hf"):
        import tiktoken

        from tasks.nanogpt.prepare import HUB, documents, tokenize_to_memmaps

        if args.corpus == "hf":
            if not args.path or not args.name:
                parser.error("hf needs --path and --name")
            source = {"path": args.path, "data_files": args.data_files}
            name = args.name
        else:
            source, name = HUB[args.corpus], args.corpus
        meta = tokenize_to_memmaps(documents(**source, text_field=args.text_field),
                                   tiktoken.get_encoding(args.encoding), root / name, name,
                                   val_every=args.val_every, max_docs=args.max_docs)
        print(f"prepared {name}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val "
              f"tokens under {root / name}")
        return
    if args.corpus == "pystdlib":
        _, meta = data.load_corpus(root, "pystdlib", max_bytes=args.max_bytes,
                                   val_fraction=args.val_fraction)
    else:
        if args.input is None or not args.name:
            parser.error("text needs --input FILE and --name NAME")
        if not args.input.is_file():
            parser.error(f"--input {args.input} is not a file")
        meta = prepare_text(args.input, root / args.name, args.val_fraction)
    print(f"prepared {meta['corpus']}: {meta['train_tokens']:,} train / "
          f"{meta['val_tokens']:,} val tokens under {root / meta['corpus']}")


if __name__ == "__main__":
    main()
