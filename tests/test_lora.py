"""LoRA math task: answer masking, answer extraction, the offline tiny preset end to end
(accuracy through real greedy generation), optimizers on LoRA parameters only."""

import pytest
import torch
from omegaconf import OmegaConf

from tasks import run
from tasks.lora import data
from tasks.lora.answers import extract_answer, is_correct, is_equivalent, to_number
from tasks.train import checkpoint, identity
from tasks.train.assemble import build_run, build_task
from tests.conftest import compose_cfg

TINY_LORA = ["task=lora_tiny_arith", "progress=false", "optim.weight_decay=0"]


@pytest.fixture(scope="module")
def arith_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.write_arith(root / "arith", n_train=2000, n_test=100)
    return root


def test_loss_covers_exactly_the_answer_tokens(arith_root):
    task = build_task(compose_cfg(TINY_LORA, data_root=arith_root), torch.device("cpu"))
    ex = task.train[0]
    ids, labels = data.encode(task.tokenizer, "arith", ex, max_length=512)
    prompt_len = len(task.tokenizer(data.prompt("arith", ex.question),
                                    add_special_tokens=False)["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len
    assert all(lab != -100 for lab in labels[prompt_len:])
    assert labels[prompt_len:] == ids[prompt_len:]
    assert labels[-1] == task.tokenizer.eos_token_id
    assert task.tokenizer.decode(labels[prompt_len:-1]).strip() == ex.answer.strip()
    batch = task.train_batch(0, 0)  # padding is masked too
    assert ((batch["labels"] != -100) <= (batch["attention_mask"] == 1)).all()


@pytest.mark.parametrize("completion,answer", [
    ("Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72", "72"),
    ("#### 1,000", "1000"),
    ("The total is $18.00 dollars.", "18"),
    ("So the answer is \\boxed{\\frac{3}{4}}.", "3/4"),
    ("We get \\boxed{12} apples; check: 5 + 7", "12"),
    ("#### -5", "-5"),
    ("50% of them", "50"),
    ("I think it is 3, no wait, 4", "4"),
])
def test_answer_extraction(completion, answer):
    assert to_number(extract_answer(completion)) == to_number(answer)


MATH_REFERENCE = "so the height is $\\boxed{{{}}}$."  # MATH solutions end in a \\boxed{}


@pytest.mark.parametrize("reference, completion", [
    ("\\frac{\\sqrt{3}}{2}", "Hence the value is $\\boxed{\\dfrac{\\sqrt3}{2}}$."),
    ("(1,2)", "The point is \\boxed{(1, 2)}"),
    ("\\frac{1}{2}", "\\boxed{0.5}"),
    ("x^2+1", "so $f(x) = \\boxed{1 + x^2}$"),
    ("\\pi", "\\boxed{\\pi}"),
    ("[2,5)", "\\boxed{[2, 5)}"),
])
def test_math_answers_are_graded_by_equivalence(reference, completion):
    """MATH's symbolic answers count when equivalent (as MATH graders count them), which the
    numeric match alone misses."""
    ref = MATH_REFERENCE.format(reference)
    assert is_equivalent(completion, ref)
    assert not is_equivalent("\\boxed{7}", ref)


def test_symbolic_grading_is_what_math_uses_and_gsm8k_does_not():
    from tasks.lora import data

    assert data.SYMBOLIC_ANSWERS == {"math"}
    ref = MATH_REFERENCE.format("\\sqrt{2}")
    assert is_correct("\\boxed{2}", ref)  # the numeric grader reads \\sqrt{2} as 2
    assert not is_equivalent("\\boxed{2}", ref)
    assert is_equivalent("\\boxed{\\sqrt{2}}", ref)


def test_exact_numeric_match():
    ref = "She has 5 + 3 = 8 pens.\n#### 8"
    assert is_correct("... #### 8", ref)
    assert is_correct("the answer is 8.0", ref)
    assert not is_correct("#### 9", ref)
    assert not is_correct("no number at all", ref)
    assert extract_answer("no number at all") is None


@pytest.mark.slow
def test_tiny_preset_fine_tunes_and_accuracy_rises(arith_root, tmp_path):
    cfg = compose_cfg([*TINY_LORA, "steps=250", "eval_every=250", "optim.lr=3e-3",
                       "task.eval.limit=50"], runs_root=tmp_path, data_root=arith_root)
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["final"]["eval_questions"] == 50
    assert summary["final"]["arith_acc"] > 0.1  # from 0 at init, through real generation
    ckpt = checkpoint.load(identity.run_dir(cfg) / "ckpt.pt")  # verified, weights only
    assert all("lora_" in k or "modules_to_save" in k for k in ckpt["model"])


@pytest.mark.parametrize("optim_name", ["muon", "smuon", "stosignsgd", "s3"])
def test_only_lora_parameters_change(arith_root, optim_name):
    cfg = compose_cfg([*TINY_LORA, f"optim={optim_name}", "task.lora.modules_to_save=[]",
                       "steps=3"], data_root=arith_root)
    task, trainer, _ = build_run(cfg)
    optimizer = trainer.optimizer
    if optim_name in ("muon", "smuon"):
        matrix = [g for g in optimizer.param_groups if g.get("use_matrix")]
        assert matrix and all(p.ndim == 2 for g in matrix for p in g["params"])
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    for step in range(3):
        optimizer.zero_grad()
        task.loss(task.model, task.train_batch(step, 0)).backward()
        optimizer.step()
    for n, p in task.model.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        if "lora_" in n:
            assert p.requires_grad
        else:
            assert not changed and not p.requires_grad, n
    assert any(not torch.equal(p.detach(), before[n]) for n, p in task.model.named_parameters()
               if "lora_B" in n)


def test_memory_estimate_is_printed_and_recorded(arith_root, capsys):
    task = build_task(compose_cfg(TINY_LORA, data_root=arith_root), torch.device("cpu"))
    assert "memory estimate (GB)" in capsys.readouterr().out
    mem = task.describe()["memory_estimate"]
    trained = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    assert mem["lora_weights_GB"] == pytest.approx(trained * 4 / 1e9, rel=1e-9)
    assert "optimizer_state_GB" not in mem  # the planner's (sweeps/plan.py), per optimizer


def test_further_test_sets_are_scored_beside_the_main_one(arith_root, tmp_path):
    """`also_eval: [math]`: MATH-500 (the real on-disk format: problem, solution with \\boxed{})
    scored at each eval beside the main set, each with its own accuracy and question count."""
    import json
    import shutil

    root = tmp_path / "data"
    shutil.copytree(arith_root, root)
    (root / "math").mkdir()
    rows = [{"problem": f"What is {i} + {i}?", "solution": f"It is \\boxed{{{2 * i}}}."}
            for i in range(6)]
    (root / "math" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = compose_cfg([*TINY_LORA, "task.also_eval=[math]", "task.eval.limit=4",
                       "task.eval.max_new_tokens=4"], data_root=root)
    task = build_task(cfg, torch.device("cpu"))
    scores = task.evaluate(task.model)
    assert scores["eval_questions"] == 4 and scores["math_questions"] == 4
    assert 0.0 <= scores["math_acc"] <= 1.0 and "arith_acc" in scores
    with pytest.raises(ValueError, match="must be one of"):
        from tasks.lora.task import LoraMathTask

        LoraMathTask.validate_config({**cfg.task, "also_eval": ["mmlu"]})


def test_loss_mode_scores_the_held_out_answer_tokens(arith_root):
    """task.eval.mode=loss (Alpaca: no answer to grade): the mean cross-entropy per answer
    token over the test examples, the same numbers as the training loss on those examples."""
    cfg = compose_cfg([*TINY_LORA, "task.eval.mode=loss", "task.eval.limit=6",
                       "task.eval.batch_size=4"], data_root=arith_root)
    task = build_task(cfg, torch.device("cpu"))
    task.model.eval()
    out = task.evaluate(task.model)
    assert set(out) == {"arith_loss", "eval_questions"} and out["eval_questions"] == 6
    assert task.target.metric == "arith_loss" and task.target.mode == "min"
    total, tokens = 0.0, 0
    for ex in task.test[:6]:  # one at a time: no padding at all
        batch = data.collate([data.encode(task.tokenizer, "arith", ex, task.max_length)],
                             task.tokenizer.pad_token_id, torch.device("cpu"))
        n = int((batch["labels"][:, 1:] != -100).sum())
        with torch.no_grad():
            total += task.loss(task.model, batch).item() * n
        tokens += n
    assert out["arith_loss"] == pytest.approx(total / tokens, rel=1e-4)


def test_alpaca_is_loss_only_and_joins_its_input_to_the_instruction():
    from tasks.lora.task import LoraMathTask

    rows = data.alpaca_rows([{"instruction": "Sum these.", "input": "2, 3", "output": "5"},
                             {"instruction": "Say hi.", "input": "", "output": "hi"}])
    assert rows == [{"instruction": "Sum these.\nInput: 2, 3", "output": "5"},
                    {"instruction": "Say hi.", "output": "hi"}]
    cfg = compose_cfg(["task=lora_qwen7b_numina", "task.dataset=alpaca",
                       "task.eval_dataset=alpaca"])
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    with pytest.raises(ValueError, match="task.eval.mode must be 'loss'"):
        LoraMathTask.validate_config(task_cfg)
    task_cfg["eval"]["mode"] = "loss"
    LoraMathTask.validate_config(task_cfg)


def test_the_training_set_is_tokenized_once_and_cached(arith_root, tmp_path):
    """Batched tokenization gives exactly `encode`'s ids and labels; the result is cached
    beside the data under a hash of tokenizer, examples and max_length, so a requeued or
    data-parallel run reads it instead of tokenizing the whole set again."""
    task = build_task(compose_cfg(TINY_LORA, data_root=arith_root), torch.device("cpu"))
    examples = task.train[:300]
    one_by_one = [data.encode(task.tokenizer, "arith", ex, 24) for ex in examples]
    cache = tmp_path / "cache"
    assert data.encode_all(task.tokenizer, "arith", examples, 24, cache) == one_by_one
    [cached] = list(cache.glob("tokenized-*.pt"))

    class NoTokenizing:  # the same tokenizer's identity, and no way to tokenize
        backend_tokenizer = task.tokenizer.backend_tokenizer

        def __call__(self, *args, **kwargs):
            raise AssertionError("tokenized again instead of reading the cache")

    assert data.encode_all(NoTokenizing(), "arith", examples, 24, cache) == one_by_one
    assert data.encode_all(task.tokenizer, "arith", examples, 25, cache) != one_by_one
    assert len(list(cache.glob("tokenized-*.pt"))) == 2  # another max_length, another file
