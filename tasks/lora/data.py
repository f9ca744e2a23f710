"""Math fine-tuning data: GSM8K, MetaMathQA, NuminaMath-CoT, MATH (prepared once by
scripts/prepare_data.py into `<data_root>/<dataset>/{train,test}.jsonl` with each dataset's own
field names) and generated arithmetic word problems in GSM8K's format for the offline preset.

Each dataset has one prompt template; the loss covers exactly the answer tokens (and the
end-of-sequence token): prompt positions get label -100.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.train import store

# dataset → (question field, answer field, prompt template, hub source for preparation)
DATASETS = {
    "gsm8k": ("question", "answer", "Question: {q}\nAnswer:",
              {"path": "openai/gsm8k", "name": "main"}),
    "metamathqa": ("query", "response", "Question: {q}\nAnswer:",
                   {"path": "meta-math/MetaMathQA"}),
    "numina": ("problem", "solution", "Problem: {q}\nSolution:",
               {"path": "AI-MO/NuminaMath-CoT"}),
    # MATH for evaluation (the 500-problem test subset); answers in \boxed{}, graded by
    # symbolic equivalence (answers.is_equivalent: \sqrt{2}, intervals, fractions)
    "math": ("problem", "solution", "Problem: {q}\nSolution:",
             {"path": "HuggingFaceH4/MATH-500"}),
    "arith": ("question", "answer", "Question: {q}\nAnswer:", None),
    # instruction tuning (StoSignSGD's Alpaca runs): the instruction (and its input) as the
    # question, the reference output as the answer; scored by held-out answer loss
    "alpaca": ("instruction", "output", "Instruction: {q}\nResponse:",
               {"path": "tatsu-lab/alpaca"}),
}

# datasets with no answer to grade: their evaluation is the mean answer-token loss on held-out
# examples (task.eval.mode: loss), not accuracy
LOSS_ONLY = {"alpaca"}
ALPACA_TEST = 2000  # Alpaca ships one split: its last 2,000 examples are held out


# datasets whose answers are graded by equivalence rather than as numbers
SYMBOLIC_ANSWERS = {"math"}

ARITH_TRAIN = 4000  # problems in the generated arithmetic training set

# Training examples of the datasets whose size is exact and published (GSM8K's train split:
# 7,473; the generated arithmetic set), for runs that train by epochs.
TRAIN_EXAMPLES = {"gsm8k": 7473, "arith": ARITH_TRAIN}


@dataclass
class Example:
    question: str
    answer: str  # the full reference solution (GSM8K: reasoning, then "#### N")


def alpaca_rows(records) -> list[dict]:
    """Alpaca's records as (instruction, output) rows; a non-empty `input` joins the
    instruction as its context."""
    rows = []
    for r in records:
        question = r["instruction"] + (f"\nInput: {r['input']}" if r.get("input") else "")
        rows.append({"instruction": question, "output": r["output"]})
    return rows


def check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"task.dataset / task.eval_dataset must be one of {list(DATASETS)}, "
                         f"got {name!r}")


def prompt(dataset: str, question: str) -> str:
    return DATASETS[dataset][2].format(q=question)


def load_examples(data_root: str | Path, dataset: str, split: str) -> list[Example]:
    check_dataset(dataset)
    path = Path(data_root).expanduser().absolute() / dataset / f"{split}.jsonl"
    if dataset == "arith" and not path.exists():
        write_arith(path.parent)
    if not path.exists():
        raise FileNotFoundError(f"{dataset} {split} split is not prepared ({path} missing); "
                                f"run scripts/prepare_data.py {dataset}")
    q_field, a_field = DATASETS[dataset][:2]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Example(r[q_field], r[a_field]) for r in rows]


# ---------------------------------------------------------------- generated arithmetic

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana"]
THINGS = ["apples", "books", "coins", "pens", "cards", "shells"]


def arith_problem(rng: random.Random) -> dict:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?"
        ans = f"{name} has {a} + {b} = {a + b} {thing}.\n#### {a + b}"
    else:
        a, b = max(a, b), min(a, b)
        q = f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have?"
        ans = f"{name} has {a} - {b} = {a - b} {thing}.\n#### {a - b}"
    return {"question": q, "answer": ans}


def write_arith(folder: Path, n_train: int = ARITH_TRAIN, n_test: int = 200, seed: int = 0) -> None:
    """GSM8K-format arithmetic word problems (deterministic), and a tokenizer trained on them."""
    rng = random.Random(seed)
    rows = {"train": [arith_problem(rng) for _ in range(n_train)],
            "test": [arith_problem(rng) for _ in range(n_test)]}
    for split, items in rows.items():
        store.write_text(folder / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    train_tokenizer(folder / "tokenizer.json",
                    [prompt("arith", r["question"]) + " " + r["answer"] for r in rows["train"]])


def train_tokenizer(path: Path, texts: list[str], vocab_size: int = 400) -> None:
    """A small byte-level BPE (HF `tokenizers`) so the offline preset needs no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


# ---------------------------------------------------------------- tokenization and batches


def encode(tokenizer, dataset: str, ex: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are -100 on the prompt, the answer's ids (+ eos) after it."""
    p_ids = tokenizer(prompt(dataset, ex.question), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(" " + ex.answer, add_special_tokens=False)["input_ids"]
    return _joined(p_ids, a_ids, tokenizer.eos_token_id, max_length)


def _joined(p_ids: list[int], a_ids: list[int], eos: int,
            max_length: int) -> tuple[list[int], list[int]]:
    """The prompt's and the answer's ids as one example: the answer ends with eos, the labels
    mask the prompt, both cut at max_length."""
    a_ids = a_ids + [eos]
    return (p_ids + a_ids)[:max_length], ([-100] * len(p_ids) + a_ids)[:max_length]


def encode_all(tokenizer, dataset: str, examples: list[Example], max_length: int,
               cache_dir: Path | None = None) -> list[tuple[list[int], list[int]]]:
    """`encode` of every example, tokenized in batches (the fast tokenizer's threads) and
    cached in `cache_dir` under a hash of the tokenizer, the examples and max_length: a
    requeued or data-parallel run reads the cache instead of tokenizing NuminaMath again."""
    key = hashlib.sha1(json.dumps([tokenizer.backend_tokenizer.to_str(), dataset, max_length,
                                   [(ex.question, ex.answer) for ex in examples]])
                       .encode()).hexdigest()[:16]
    path = cache_dir / f"tokenized-{key}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        cached = torch.load(path, weights_only=True)
        ids = cached["ids"].split(cached["lengths"].tolist())
        labels = cached["labels"].split(cached["lengths"].tolist())
        return [(i.tolist(), lab.tolist()) for i, lab in zip(ids, labels)]
    prompts = tokenizer([prompt(dataset, ex.question) for ex in examples],
                        add_special_tokens=False)["input_ids"]
    answers = tokenizer([" " + ex.answer for ex in examples], add_special_tokens=False)["input_ids"]
    encoded = [_joined(p, a, tokenizer.eos_token_id, max_length)
               for p, a in zip(prompts, answers)]
    if path is not None:
        flat = {"ids": torch.tensor([t for ids, _ in encoded for t in ids], dtype=torch.int32),
                "labels": torch.tensor([t for _, lab in encoded for t in lab],
                                       dtype=torch.int32),
                "lengths": torch.tensor([len(ids) for ids, _ in encoded], dtype=torch.int64)}
        try:
            store.atomic_write(path, lambda f: torch.save(flat, f))
        except OSError as e:  # a read-only data folder: train on, tokenizing again next time
            warnings.warn(f"could not cache the tokenized {dataset} set in {path}: {e}")
    return encoded


def bucketed_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of similar lengths (less padding), in a shuffled order fixed by (seed, epoch)."""
    rng = random.Random(f"{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part) - batch_size + 1,
                                                             batch_size)]
    rng.shuffle(batches)
    return batches


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
            "labels": labels.to(device)}
