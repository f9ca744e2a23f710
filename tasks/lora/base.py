"""A pretrained small base for the offline LoRA tables, built here once from the offline corpus.

The papers fine-tune pretrained LLMs; a base built from a config is random, so LoRA on it must
also learn the language, and the trained embeddings and head it then needs are what the
comparison ends up measuring. This module pretrains the offline preset's tiny Llama on the
Python standard library's source (the corpus `prepare_data.py pystdlib` writes), with a
byte-level BPE trained on that corpus alone, and saves it in the Hugging Face format, so the
LoRA task loads it as it loads any checkpoint:

    python scripts/prepare_data.py tiny_llama_base [--steps N]

writes `<data_root>/tiny_llama_base/`: config.json and model.safetensors (`save_pretrained`),
the tokenizer (tokenizer.json and its config) and meta.json (what it was trained on, for how
long, its last losses and the weights' sha1). A task names it `model.pretrained:
tiny_llama_base`; `resolve` turns a local base's name into its folder under the data root.
Deterministic on a machine: one seed, one thread order (CPU).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from tasks.train import store

NAME = "tiny_llama_base"
PREPARE = f"python scripts/prepare_data.py {NAME}"
LOCAL_BASES = (NAME,)
# the offline preset's Llama (conf/task/lora_tiny_arith.yaml)
CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 128,
          "tie_word_embeddings": False}
VOCAB = 512
TOKENIZER_BYTES = 1_000_000  # the BPE is trained on the corpus's first MB


def resolve(name: str, data_root: str | Path) -> str:
    """A local base's folder under the data root; any other name (hub id, path) as it is."""
    if name in LOCAL_BASES:
        return str(Path(data_root).expanduser().absolute() / name)
    return name


def is_local(name: str | None) -> bool:
    return name in LOCAL_BASES


def _tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


def build(out_dir: Path, corpus: bytes, steps: int = 3000, seed: int = 0, batch: int = 32,
          seq: int = 64, lr: float = 3e-3, config: dict | None = None) -> dict:
    """Pretrain the tiny Llama on `corpus` (raw text bytes) and save it in `out_dir`; returns
    its meta.json. AdamW (0.9, 0.95), weight decay 0.1, linear warm-up over 5% then cosine to
    10%, windows drawn at random from the tokenized corpus."""
    from transformers import LlamaConfig, LlamaForCausalLM

    text = corpus.decode("utf-8", errors="replace")
    tokenizer = _tokenizer(text[:TOKENIZER_BYTES])
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    if len(ids) < 10 * (seq + 1):
        raise ValueError(f"the corpus has {len(ids)} tokens; pretraining needs at least "
                         f"{10 * (seq + 1)}")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, **(config or CONFIG))
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))

    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(ids)
    losses = []
    for step in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss  # the model shifts the labels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    weights = hashlib.sha1((out_dir / "model.safetensors").read_bytes()).hexdigest()
    meta = {"name": out_dir.name, "corpus_bytes": len(corpus),
            "corpus_sha1": hashlib.sha1(corpus).hexdigest(), "tokens": int(len(ids)),
            "vocab_size": len(tokenizer), "config": dict(config or CONFIG), "steps": steps,
            "seed": seed, "batch": batch, "seq": seq, "lr": lr,
            "first_loss": losses[0], "last_losses_mean": float(np.mean(losses[-50:])),
            "weights_sha1": weights, "prepare": PREPARE}
    store.write_json(out_dir / "meta.json", meta)
    return meta
