"""The pretrained small base of the offline LoRA tables (tasks/lora/base.py): built by
prepare_data.py from the offline corpus, saved in the Hugging Face format, loaded by the LoRA
task by name, frozen under LoRA, and asked for (with its command) where it is missing."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from sweeps.compose import compose_runs
from tasks.lora import base, data
from tasks.lora.task import LoraMathTask
from tasks.train.assemble import build_task
from tests.conftest import compose_cfg

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
         "tie_word_embeddings": False}
PRETRAINED = ["task=lora_tiny_arith_pretrained", "progress=false", "optim.weight_decay=0"]


def data_tokenizer(root):
    return PreTrainedTokenizerFast(tokenizer_file=str(root / "arith" / "tokenizer.json"))


def _corpus() -> bytes:
    """Code with comments in words the arithmetic questions use (a stand-in for the stdlib)."""
    names, things = data.NAMES, data.THINGS
    lines = [f"def f{i}(x):\n    # {names[i % 8]} has {i % 10} {things[i % 6]} and gets more. "
             f"How many does {names[i % 8]} have? Question: Answer:\n    return x + {i % 10}\n"
             for i in range(3000)]
    return "".join(lines).encode()


@pytest.fixture(scope="module")
def base_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.write_arith(root / "arith", n_train=300, n_test=20)
    meta = base.build(root / base.NAME, _corpus(), steps=100, seq=32, batch=8, config=SMALL)
    return root, meta


def test_pretraining_learns_the_corpus_and_saves_a_loadable_checkpoint(base_root):
    root, meta = base_root
    folder = root / base.NAME
    assert meta["last_losses_mean"] < meta["first_loss"] - 1.0  # it learned, not just ran
    assert meta["config"] == SMALL and meta["steps"] == 100
    for name in ("config.json", "model.safetensors", "tokenizer.json", "meta.json"):
        assert (folder / name).exists(), name
    # the same corpus and seed give the same weights
    again = base.build(root / "again", _corpus(), steps=100, seq=32, batch=8, config=SMALL)
    assert again["weights_sha1"] == meta["weights_sha1"]


def test_the_lora_task_loads_the_base_by_name_and_trains_adapters_only(base_root):
    root, _ = base_root
    task = build_task(compose_cfg(PRETRAINED, data_root=root), torch.device("cpu"))
    saved = AutoModelForCausalLM.from_pretrained(root / base.NAME).state_dict()
    weights = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
               for n, p in task.model.named_parameters() if "lora_" not in n}
    assert saved.keys() == weights.keys()
    assert all(torch.equal(saved[k], weights[k].detach()) for k in saved)  # the base, loaded
    trained = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)  # embeddings and head frozen
    # the base's own tokenizer (trained on its corpus), not the arith set's
    assert task.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(
        root / base.NAME).get_vocab() != data_tokenizer(root).get_vocab()
    loss = task.loss(task.model, task.train_batch(0, 0))
    assert torch.isfinite(loss)


def test_a_missing_base_names_the_command_that_prepares_it(tmp_path):
    data.write_arith(tmp_path / "arith", n_train=50, n_test=10)
    cfg = compose_cfg(PRETRAINED, data_root=tmp_path)
    needs = {n.name: n for n in LoraMathTask.data_needs(dict(cfg))}
    need = needs[f"base {base.NAME}"]
    assert not need.ready and need.prepare == base.PREPARE
    assert need.path == str(tmp_path.absolute() / base.NAME)
    with pytest.raises(Exception, match="run: python scripts/prepare_data.py "
                                         "tiny_llama_base"):  # through hydra's instantiate
        build_task(cfg, torch.device("cpu"))
    # the plan knows its size before it exists: the config it will be built with
    cost = LoraMathTask.cost(compose_runs([[*PRETRAINED, f"data_root={tmp_path}"]],
                                          validate_runs=False)[0][1])
    assert cost.params > 0 and "prepared here" in cost.basis


@pytest.mark.slow
def test_prepare_data_builds_the_base_from_the_stdlib_corpus(tmp_path):
    corpus = np.frombuffer(_corpus(), dtype=np.uint8)
    (tmp_path / "pystdlib").mkdir()
    corpus.astype(np.uint16).tofile(tmp_path / "pystdlib" / "train.bin")
    done = subprocess.run([sys.executable, "scripts/prepare_data.py", "tiny_llama_base",
                           "--steps", "2", "--data-root", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "prepared tiny_llama_base: 2 steps on pystdlib" in done.stdout
    assert (tmp_path / base.NAME / "model.safetensors").exists()
    bad = subprocess.run([sys.executable, "scripts/prepare_data.py", "tiny_llama_base",
                          "--steps", "0", "--data-root", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--steps must be at least 1, got 0" in bad.stderr
