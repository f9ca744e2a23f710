"""nanoGPT task: BPE corpus preparation through datasets + tiktoken, the model's switches,
loss at init, overfitting a tiny corpus."""

import json
import math

import numpy as np
import pytest
import tiktoken
import torch

from tasks import run
from tasks.nanogpt import GPT, GPTConfig
from tasks.nanogpt.prepare import documents, tokenize_to_memmaps
from tests.conftest import TINY, compose_cfg


def small_bpe():
    """A real tiktoken Encoding built offline: bytes, two merges, and an end-of-text token."""
    ranks = {bytes([i]): i for i in range(256)}
    ranks[b"th"] = 256
    ranks[b"the"] = 257
    return tiktoken.Encoding(
        name="test_bpe", mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 258},
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def test_hf_json_corpus_tokenizes_to_memmaps_that_decode_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    texts = [f"the {i}th document: the fox thinks {'ab' * i}" for i in range(30)]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    enc = small_bpe()
    meta = tokenize_to_memmaps(documents("json", data_files=str(src), text_field="body"), enc,
                               tmp_path / "corpus", "corpus", val_every=5, progress=False)
    assert meta["vocab_size"] == 259 and meta["tokenizer"] == "test_bpe"
    splits = {s: np.memmap(tmp_path / "corpus" / f"{s}.bin", dtype=np.uint16, mode="r")
              for s in ("train", "val")}
    assert meta["train_tokens"] == len(splits["train"]) and meta["val_tokens"] == len(splits["val"])

    def docs(ids):
        text = enc.decode(ids.tolist(), errors="strict")
        return text.split("<|endoftext|>")[:-1]

    assert docs(splits["val"]) == [t for i, t in enumerate(texts) if i % 5 == 4]
    assert docs(splits["train"]) == [t for i, t in enumerate(texts) if i % 5 != 4]
    assert 256 in splits["train"] or 257 in splits["train"]  # the merges were used
    assert not list((tmp_path / "corpus").glob(".*partial"))


@pytest.mark.parametrize("switches", [
    {}, {"rope": True}, {"norm": "rmsnorm", "qk_norm": True, "activation": "relu2"},
    {"tie_weights": False, "rope": True, "norm": "rmsnorm"},
])
def test_loss_at_init_is_about_ln_vocab(switches):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=2, n_head=2, n_embd=64,
                          **switches))
    idx, targets = torch.randint(0, 512, (2, 8, 32))  # targets independent of the inputs
    _, loss = model(idx, targets)
    assert loss.item() == pytest.approx(math.log(512), abs=0.15)


def test_gpt2_small_has_124m_parameters():
    model = GPT(GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    assert 124.0e6 < model.num_params() < 124.6e6


def test_bad_model_switch_names_the_key():
    with pytest.raises(ValueError, match="task.model.norm"):
        GPTConfig(norm="batchnorm")


@pytest.mark.slow
def test_a_tiny_model_overfits_a_tiny_corpus(tmp_path):
    corpus = tmp_path / "data" / "tiny"
    corpus.mkdir(parents=True)
    text = np.frombuffer(b"abcdefghij" * 400, dtype=np.uint8)
    text.astype(np.uint16).tofile(corpus / "train.bin")
    text.astype(np.uint16).tofile(corpus / "val.bin")
    (corpus / "meta.json").write_text(json.dumps({"corpus": "tiny", "tokenizer": "bytes",
                                                  "vocab_size": 256}))
    cfg = compose_cfg([*TINY, "task.corpus=tiny", "steps=150", "eval_every=150",
                       "optim.lr=3e-3", "schedule.warmup_steps=10"],
                      runs_root=tmp_path / "runs", data_root=tmp_path / "data")
    summary = run(cfg)
    assert summary["final"]["train_loss"] < 0.1  # it memorized the ten-letter cycle
    assert summary["final"]["val_loss"] < 0.1


@pytest.mark.slow  # a cold compile of the model: about half a minute on two cores
def test_compiled_model_trains_like_the_eager_one(tmp_path):
    common = [*TINY, "steps=6", "eval_every=6", "log_every=1"]
    eager = run(compose_cfg(common, runs_root=tmp_path / "eager"))
    compiled = run(compose_cfg([*common, "task.compile=true"], runs_root=tmp_path / "compiled"))
    assert compiled["final"]["train_loss"] == pytest.approx(eager["final"]["train_loss"],
                                                            rel=1e-4)


@pytest.mark.slow
def test_the_lstm_model_trains_on_the_embedded_corpus(tmp_path):
    """Softsign's next-character LSTM: the same task, data and loss as the GPT, another model;
    its loss at init is about ln(vocab) and falls."""
    from tasks.nanogpt.model import LSTM, build_model

    cfg = GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=1, n_embd=32, arch="lstm")
    model = build_model(cfg)
    assert isinstance(model, LSTM)
    x = torch.randint(0, 256, (4, 16))
    _, loss = model(x, x)
    assert abs(loss.item() - math.log(256)) < 0.5
    with pytest.raises(ValueError, match="task.model.arch must be one of"):
        GPTConfig(arch="rnn")
    summary = run(compose_cfg(["task=nanogpt_char_lstm", "steps=40", "eval_every=20",
                               "progress=false", "optim=adamw", "optim.lr=3e-3"],
                              runs_root=tmp_path))
    assert summary["status"] == "completed"
    assert summary["final"]["val_loss"] < math.log(256) - 1.0


def test_olmo2_options_swiglu_and_the_reordered_norm():
    """activation=swiglu: silu(x·W_gate) ⊙ x·W_up, hidden 8/3·d to 64 (a 4x MLP's parameters);
    norm_placement=post: x + norm(f(x)) (OLMo-2), not x + f(norm(x))."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=4, n_embd=96, block_size=16, rope=True, norm="rmsnorm",
                    qk_norm=True, activation="swiglu", norm_placement="post",
                    tie_weights=False)
    model = GPT(cfg)
    block = model.blocks[0]
    assert block.mlp.fc.weight.shape == (2 * 256, 96) and block.mlp.proj.weight.shape == (96, 256)
    x = torch.randn(2, 16, 96)
    gate, up = block.mlp.fc(x).chunk(2, dim=-1)
    assert torch.allclose(block.mlp(x), block.mlp.proj(torch.nn.functional.silu(gate) * up))
    h = x + block.ln1(block.attn(x))
    assert torch.allclose(block(x), h + block.ln2(block.mlp(h)), atol=1e-6)
    with pytest.raises(ValueError, match="norm_placement"):
        GPTConfig(norm_placement="sandwich")
