"""`scripts/prepare_data.py` subcommands for the nanoGPT corpora: the embedded stdlib corpus,
any local text file (byte-level), and the hub's BPE corpora (OpenWebText, FineWeb, C4, or any
`datasets` source): `<data_root>/<name>/{train,val}.bin` uint16 memmaps and `meta.json`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tasks.nanogpt import data
from tasks.train import checks, store
from tasks.train.preparation import Preparation, PreparationError


def prepare_text(path: Path, out_dir: Path, val_fraction: float) -> dict:
    raw = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    if len(raw) < 1000:
        raise PreparationError(f"{path} has {len(raw)} bytes; a corpus needs at least 1000")
    n_val = max(int(len(raw) * val_fraction), 1)
    data.write_token_split(out_dir / "train.bin", raw[:-n_val])
    data.write_token_split(out_dir / "val.bin", raw[-n_val:])
    meta = {"corpus": out_dir.name, "tokenizer": "bytes", "vocab_size": data.BYTE_VOCAB,
            "train_tokens": int(len(raw) - n_val), "val_tokens": n_val,
            "source": str(Path(path).absolute()),
            "sha1": hashlib.sha1(raw.tobytes()).hexdigest()}
    store.write_json(out_dir / "meta.json", meta)
    return meta


def _val_fraction(args) -> float:
    if not 0 < args.val_fraction < 1:
        raise PreparationError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    return args.val_fraction


def _done(meta: dict, root: Path) -> str:
    return (f"prepared {meta['corpus']}: {meta['train_tokens']:,} train / "
            f"{meta['val_tokens']:,} val tokens under {root / meta['corpus']}")


def _byte_arguments(parser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--max-bytes", type=int, default=4_000_000)


def _pystdlib(args, root: Path) -> str:
    _, meta = data.load_corpus(root, "pystdlib", max_bytes=args.max_bytes,
                               val_fraction=_val_fraction(args))
    return _done(meta, root)


def _text_arguments(parser) -> None:
    parser.add_argument("--input", type=Path, required=True, help="the text file to read")
    parser.add_argument("--name", required=True, help="the corpus name (task.corpus=NAME)")
    parser.add_argument("--val-fraction", type=float, default=0.05)


def _text(args, root: Path) -> str:
    try:
        checks.data_name(args.name, "--name")
    except ValueError as e:
        raise PreparationError(str(e)) from None
    if not args.input.is_file():
        raise PreparationError(f"--input {args.input} is not a file")
    return _done(prepare_text(args.input, root / args.name, _val_fraction(args)), root)


def _bpe_arguments(parser, hub: bool) -> None:
    if not hub:
        parser.add_argument("--path", required=True,
                            help="load_dataset path (a hub id, or json / text)")
        parser.add_argument("--name", required=True, help="the corpus name (task.corpus=NAME)")
        parser.add_argument("--data-files", nargs="*", help="local files for json / text")
    parser.add_argument("--text-field", default="text", help="the column holding text")
    parser.add_argument("--encoding", default="gpt2", help="tiktoken encoding")
    parser.add_argument("--val-every", type=int, default=2000,
                        help="every Nth document goes to validation")
    parser.add_argument("--max-docs", type=int, default=None, help="stop after N documents")


def _bpe(corpus: str | None):
    def run(args, root: Path) -> str:
        import tiktoken

        from tasks.nanogpt.prepare import HUB, documents, tokenize_to_memmaps

        if corpus is None:
            try:
                name = checks.data_name(args.name, "--name")
            except ValueError as e:
                raise PreparationError(str(e)) from None
            source = {"path": args.path, "data_files": args.data_files}
        else:
            source, name = HUB[corpus], corpus
        meta = tokenize_to_memmaps(documents(**source, text_field=args.text_field),
                                   tiktoken.get_encoding(args.encoding), root / name, name,
                                   val_every=args.val_every, max_docs=args.max_docs)
        return (f"prepared {name}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val "
                f"tokens under {root / name}")
    return run


PREPARATIONS = [
    Preparation("pystdlib", "the Python standard library's source as a byte-level corpus (the "
                            "embedded default; no download)", _pystdlib, _byte_arguments),
    Preparation("text", "any local text file as a byte-level corpus", _text, _text_arguments),
    *[Preparation(corpus, f"{corpus} from the hub, tokenized once with GPT-2's BPE",
                  _bpe(corpus), lambda parser: _bpe_arguments(parser, hub=True))
      for corpus in ("openwebtext", "fineweb", "c4")],
    Preparation("hf", "any `datasets` source (hub id, json or text files) with GPT-2's BPE",
                _bpe(None), lambda parser: _bpe_arguments(parser, hub=False)),
]
