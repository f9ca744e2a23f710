"""LoRA fine-tuning of a causal LM on math, scored by GSM8K-style accuracy.

The model is any transformers causal LM — a hub or local checkpoint (`model.pretrained`) in bf16,
optionally 4-bit (bitsandbytes, GPU) — or one built from a config (`model.config`, the offline
tiny Llama). peft wraps it with LoRA; only LoRA parameters (and `lora.modules_to_save`) train,
so every optimizer of `optim` sees just those, and the Muon family treats each LoRA factor as a
matrix. Checkpoints hold the trainable parameters only.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tasks.lora import base as local_base
from tasks.lora import data
from tasks.lora.answers import is_correct, is_equivalent
from tasks.train import checks
from tasks.train.base import Cost, DataNeed, Target, Task, evals_in_run
from tasks.train.cost import training_memory

# Architectures of the hub models the presets name, from each model's published config.json,
# so that a plan can size them without downloading anything (a locally cached config wins).
KNOWN_ARCHITECTURES = {
    "Qwen/Qwen2.5-7B": ("qwen2", {"hidden_size": 3584, "intermediate_size": 18944,
                                  "num_hidden_layers": 28, "num_attention_heads": 28,
                                  "num_key_value_heads": 4, "vocab_size": 152064,
                                  "tie_word_embeddings": False}),
    "meta-llama/Llama-3.1-8B": ("llama", {"hidden_size": 4096, "intermediate_size": 14336,
                                          "num_hidden_layers": 32, "num_attention_heads": 32,
                                          "num_key_value_heads": 8, "vocab_size": 128256,
                                          "tie_word_embeddings": False}),
    "mistralai/Mistral-7B-v0.1": ("mistral", {"hidden_size": 4096, "intermediate_size": 14336,
                                              "num_hidden_layers": 32,
                                              "num_attention_heads": 32,
                                              "num_key_value_heads": 8, "vocab_size": 32000,
                                              "tie_word_embeddings": False}),
}
KNOWN_ARCHITECTURES["meta-llama/Meta-Llama-3-8B-Instruct"] = \
    KNOWN_ARCHITECTURES["meta-llama/Llama-3.1-8B"]
# test-set sizes, for a plan before preparing
EVAL_QUESTIONS = {"gsm8k": 1319, "math": 500, "alpaca": data.ALPACA_TEST}
EVAL_MODES = ["accuracy", "loss"]  # greedy answers graded, or the held-out answer loss
TINY_VOCAB = 402  # the offline preset's BPE: 400 merges' worth plus <pad> and </s> at most


def memory_estimate(model, batch_size: int, max_length: int, dtype_bytes: int,
                    four_bit: bool, checkpointing: bool) -> dict:
    """GB of base weights, LoRA weights, activations and logits. The optimizer's state is the
    planner's to add (sweeps/plan.py): a problem knows nothing of optimizers, so that editing
    one changes no key of another's runs (tasks/train/identity.py)."""
    base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cfg = model.config
    hidden, layers = cfg.hidden_size, cfg.num_hidden_layers
    tokens = batch_size * max_length
    # per layer and token: ~34·hidden bytes in bf16 without checkpointing (Korthikanti et al.,
    # no attention matrix with SDPA); checkpointing keeps the layer inputs only
    per_layer = 2 * hidden if checkpointing else 34 * hidden
    return {
        "base_weights_GB": base * (0.5 if four_bit else dtype_bytes) / 1e9,
        "lora_weights_GB": trained * 4 / 1e9,
        "activations_GB": tokens * layers * per_layer / 1e9 * (dtype_bytes / 2),
        "logits_GB": tokens * cfg.vocab_size * 4 / 1e9,
    }


def lora_parameters(net: torch.nn.Module, lora: dict) -> int:
    """Parameters LoRA trains on `net`: r·(in + out) per targeted Linear, and every parameter
    of the modules it saves (trains in full)."""
    targets = tuple(lora["target_modules"])
    saved_modules = tuple(lora.get("modules_to_save") or [])
    trained = 0
    for module_name, module in net.named_modules():
        leaf = module_name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and leaf in targets:
            trained += lora["r"] * (module.in_features + module.out_features)
        elif leaf in saved_modules:
            trained += sum(p.numel() for p in module.parameters())
    return trained


def _hub_config(name: str):
    """The model's config: from a local folder or the local hub cache, else the built-in
    architecture table; None when neither knows it."""
    from pathlib import Path

    from transformers import AutoConfig

    try:
        local = Path(name).is_dir() or _cached(name)
        if local:
            return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if name in KNOWN_ARCHITECTURES:
        model_type, fields = KNOWN_ARCHITECTURES[name]
        return AutoConfig.for_model(model_type, **fields)
    return None


def _cached(name: str) -> bool:
    """Whether the hub checkpoint `name` has its config and weights in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid hub id (e.g. a local path that does not exist)
        return False
    if not isinstance(config, str):
        return False
    from pathlib import Path

    folder = Path(config).parent
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


class LoraMathTask(Task):
    checkpoint_trainable_only = True  # the base model is the same file every time

    def __init__(self, *, model: dict, lora: dict | None, dataset: str, eval_dataset: str,
                 batch_size: int, max_length: int, eval: dict, data_root: str, seed: int,
                 device: torch.device, grad_accum: int = 1, target_accuracy: float | None = None,
                 also_eval: tuple = (), name: str = "lora_math"):
        from peft import LoraConfig, get_peft_model

        data.check_dataset(dataset)
        data.check_dataset(eval_dataset)
        self.name, self.seed, self.device = name, seed, device
        self.dataset, self.eval_dataset = dataset, eval_dataset
        self.batch_size, self.grad_accum, self.max_length = batch_size, grad_accum, max_length
        self.eval_cfg = dict(eval)
        self.train = data.load_examples(data_root, dataset, "train")
        self.test = data.load_examples(data_root, eval_dataset, "test")
        # further test sets scored at each eval beside the main one (MATH-500 beside GSM8K)
        self.also_eval = {d: data.load_examples(data_root, d, "test") for d in also_eval or ()}
        if local_base.is_local(model.get("pretrained")):  # prepared here (tasks/lora/base.py)
            model = {**model, "pretrained": self._local_base(model["pretrained"], data_root)}
        self.tokenizer = self._tokenizer(model, data_root)
        torch.manual_seed(seed)
        base = self._base_model(model)
        if model.get("gradient_checkpointing"):
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()
        if lora is None:  # a full fine-tune: every weight trains
            self.model = base.to(device)
        else:
            peft_cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"],
                                  lora_dropout=lora["dropout"],
                                  target_modules=list(lora["target_modules"]),
                                  modules_to_save=list(lora.get("modules_to_save") or [])
                                  or None, task_type="CAUSAL_LM")
            self.model = get_peft_model(base, peft_cfg).to(device)
        # tokenized once and cached beside the data: requeues and other ranks read the cache
        self.encoded = data.encode_all(self.tokenizer, dataset, self.train, max_length,
                                       cache_dir=Path(data_root).expanduser() / dataset)
        self.epoch_examples = len(self.encoded)
        self.batches_per_epoch = len(self.encoded) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"task.batch_size {batch_size} exceeds {len(self.encoded)} examples")
        self._epoch, self._batches = None, None
        self.tokens_per_batch = batch_size  # examples
        self.eval_mode = self.eval_cfg.get("mode", "accuracy")
        if self.eval_mode == "loss":  # held-out answer loss: lower is better
            self.metric = f"{eval_dataset}_loss"
            self.target = Target(self.metric, None, "min")
        else:
            self.metric = f"{eval_dataset}_acc"
            self.target = Target(self.metric, target_accuracy, "max")
        dtype_bytes = 2 if model.get("dtype") == "bfloat16" else 4
        self.memory = memory_estimate(self.model, batch_size, max_length, dtype_bytes,
                                      bool(model.get("load_in_4bit")),
                                      bool(model.get("gradient_checkpointing")))
        trained = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        print(f"[optbench] {name}: {trained:,} trainable of {total:,} parameters; memory "
              f"estimate (GB): base {self.memory['base_weights_GB']:.2f}, LoRA "
              f"{self.memory['lora_weights_GB']:.3f} (+ the optimizer's state, per fp32 buffer "
              f"as much again), activations "
              f"{self.memory['activations_GB']:.2f}, logits {self.memory['logits_GB']:.2f}")

    @classmethod
    def validate_config(cls, task: dict) -> None:
        """Sizes, names and LoRA settings, checked before anything is read or built."""
        for key in ("batch_size", "max_length"):
            checks.integer(task, key)
        data.check_dataset(task.get("dataset"))
        data.check_dataset(task.get("eval_dataset"))
        for extra in task.get("also_eval") or ():
            data.check_dataset(extra)
        lora = task.get("lora")  # null: a full fine-tune
        if lora is not None:
            checks.integer(lora, "r", prefix="task.lora.")
            checks.number(lora, "alpha", 0.0, float("inf"), low_open=True,
                          prefix="task.lora.")
            checks.number(lora, "dropout", 0.0, 1.0, prefix="task.lora.")
            if not lora.get("target_modules"):
                raise ValueError("task.lora.target_modules must name at least one module, got "
                                 f"{lora.get('target_modules')!r}")
        model = task.get("model") or {}
        if not (model.get("pretrained") or model.get("config")):
            raise ValueError("task.model needs `pretrained` (hub id or path) or `config`")
        checks.one_of(model, "dtype", ["bfloat16", "float32", "float16", None],
                      prefix="task.model.")
        eval_cfg = task.get("eval") or {}
        if eval_cfg.get("limit") is not None:
            checks.integer(eval_cfg, "limit", prefix="task.eval.")
        checks.integer(eval_cfg, "batch_size", prefix="task.eval.")
        checks.integer(eval_cfg, "max_new_tokens", prefix="task.eval.")
        checks.one_of(eval_cfg, "mode", EVAL_MODES, prefix="task.eval.")
        loss_only = [d for d in [task.get("eval_dataset"), *(task.get("also_eval") or ())]
                     if d in data.LOSS_ONLY]
        if loss_only and eval_cfg.get("mode") != "loss":
            raise ValueError(f"task.eval.mode must be 'loss' for {loss_only}: they have no "
                             f"answer to grade (got {eval_cfg.get('mode')!r})")

    @classmethod
    def train_examples(cls, task: dict) -> int:
        """Training examples of the dataset by its published size (epochs need an exact
        count; datasets whose size we do not pin train by steps)."""
        count = data.TRAIN_EXAMPLES.get(task["dataset"])
        if count is None:
            raise ValueError(f"epochs: the size of {task['dataset']!r} is not pinned (pinned: "
                             f"{sorted(data.TRAIN_EXAMPLES)}); set steps instead")
        return count

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        """The prepared train and test sets (arith is generated in the run) and the base
        model's weights in the local hub cache (a job never downloads)."""
        from pathlib import Path

        task = cfg["task"]
        root = Path(cfg["data_root"]).expanduser().absolute()
        needs = [DataNeed(f"{task['dataset']} train", str(root / task["dataset"] / "train.jsonl"),
                          task["dataset"] == "arith"
                          or (root / task["dataset"] / "train.jsonl").exists(),
                          f"python scripts/prepare_data.py {task['dataset']}"),
                 *[DataNeed(f"{d} test", str(root / d / "test.jsonl"),
                            d == "arith" or (root / d / "test.jsonl").exists(),
                            f"python scripts/prepare_data.py {d}")
                   for d in [task["eval_dataset"], *(task.get("also_eval") or ())]]]
        name = task["model"].get("pretrained")
        if local_base.is_local(name):
            folder = local_base.resolve(name, root)
            needs.append(DataNeed(f"base {name}", folder,
                                  (Path(folder) / "config.json").exists(), local_base.PREPARE))
        elif name:
            needs.append(DataNeed(f"weights {name}", "hub cache (HF_HOME)",
                                  Path(name).is_dir() or _cached(name), f"hf download {name}"))
        return tuple(needs)

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        """Compute and memory of the run `cfg` (a resolved run config): the model is built on
        the meta device from its config; FLOPs per token are 2N forward, 2N for the input
        gradients through the frozen base, 2N more with gradient checkpointing."""

        from transformers import AutoConfig, AutoModelForCausalLM

        task, model = cfg["task"], cfg["task"]["model"]
        name = model.get("pretrained")
        source = ("cached config" if name and _cached(name) else
                  "built-in architecture table" if name else "the preset's config")
        if local_base.is_local(name):  # prepared here: its config, or the one it is built with
            folder = Path(local_base.resolve(name, cfg["data_root"]))
            source = "the base prepared here (tasks/lora/base.py)"
            hf_cfg = (AutoConfig.from_pretrained(folder) if (folder / "config.json").exists()
                      else AutoConfig.for_model("llama", vocab_size=local_base.VOCAB,
                                                **local_base.CONFIG))
        else:
            hf_cfg = (_hub_config(name) if name else
                      AutoConfig.for_model("llama", vocab_size=TINY_VOCAB, **model["config"]))
        if hf_cfg is None:
            raise ValueError(f"task.model.pretrained {name!r}: no local copy and not among "
                             f"the known architectures {sorted(KNOWN_ARCHITECTURES)}; cache it "
                             f"first (hf download {name})")
        with torch.device("meta"):
            net = AutoModelForCausalLM.from_config(hf_cfg)
        params = sum(p.numel() for p in net.parameters())
        lora = task.get("lora")
        trained = params if lora is None else lora_parameters(net, lora)
        checkpointing = bool(model.get("gradient_checkpointing"))
        # forward 2N, input gradients 2N, weight gradients 2N where every weight trains, and
        # the forward again under checkpointing; an upper bound: every sequence padded
        per_token = (4 + 2 * (lora is None) + 2 * checkpointing) * params
        tokens = cfg["steps"] * cfg["grad_accum"] * task["batch_size"] * task["max_length"]
        eval_cfg = task.get("eval") or {}
        per_set = [eval_cfg.get("limit") or EVAL_QUESTIONS.get(d, 1000)
                   for d in [task["eval_dataset"], *(task.get("also_eval") or ())]]
        questions = sum(per_set)
        generating = eval_cfg.get("mode") != "loss"
        # each scored question: its prompt (about 200 tokens) through the model at FLOP speed;
        # in loss mode one forward pass over at most max_length tokens
        eval_tokens = questions * (200 if generating else task["max_length"])
        dtype_bytes = 2 if model.get("dtype") == "bfloat16" else 4
        hidden, layers = hf_cfg.hidden_size, hf_cfg.num_hidden_layers
        micro_tokens = task["batch_size"] * task["max_length"]
        activations = (micro_tokens * layers * (2 if checkpointing else 34) * hidden
                       * dtype_bytes / 2 + micro_tokens * hf_cfg.vocab_size * 4)
        weight_bytes = 0.5 if model.get("load_in_4bit") else dtype_bytes
        evals = evals_in_run(cfg["steps"], cfg["eval_every"])
        # greedy decoding is memory-bound: each generated token of a batch reads every weight
        # (the KV cache on top is left out: small beside 7B weights at these lengths)
        decode_steps = sum(math.ceil(n / eval_cfg.get("batch_size", 16)) for n in per_set) \
            * eval_cfg.get("max_new_tokens", 256) if generating else 0
        return Cost(params=params, trained_params=trained, train_flops=per_token * tokens,
                    eval_flops=2.0 * params * eval_tokens * evals,
                    eval_bytes_read=decode_steps * params * weight_bytes * evals,
                    host_bytes=params * dtype_bytes if name else 0.0,
                    memory_bytes=training_memory(params, trained, activations,
                                                 weight_bytes),
                    data=cls.data_needs(cfg),
                    compute="bf16" if dtype_bytes == 2 else "fp32",
                    basis=f"{params / 1e9:.3g}B parameters ({source}); {per_token // params}N "
                          f"FLOPs per token, every sequence counted at max_length (an upper "
                          f"bound); eval ~200 prompt tokens per question at FLOP speed, then "
                          f"max_new_tokens greedy steps per batch, each reading every weight")

    # ------------------------------------------------------------ model and tokenizer

    def _tokenizer(self, model: dict, data_root: str):
        from pathlib import Path

        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        if model.get("pretrained"):
            tok = AutoTokenizer.from_pretrained(model["pretrained"])
        else:  # the offline preset's tokenizer, trained with its data
            path = Path(data_root).expanduser().absolute() / self.dataset / "tokenizer.json"
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="</s>",
                                          pad_token="<pad>")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    @staticmethod
    def _local_base(name: str, data_root: str) -> str:
        folder = local_base.resolve(name, data_root)
        if not (Path(folder) / "config.json").exists():
            raise FileNotFoundError(f"task.model.pretrained {name!r} is a base prepared here and "
                                    f"{folder} has none; run: {local_base.PREPARE}")
        return folder

    def _base_model(self, model: dict):
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

        dtype = getattr(torch, model.get("dtype") or "float32")
        if model.get("pretrained"):
            kwargs = {"torch_dtype": dtype}
            if model.get("load_in_4bit"):
                if not torch.cuda.is_available():
                    raise ValueError("task.model.load_in_4bit needs a CUDA GPU (bitsandbytes)")
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16,
                    bnb_4bit_quant_type="nf4")
            return AutoModelForCausalLM.from_pretrained(model["pretrained"], **kwargs)
        if not model.get("config"):
            raise ValueError("task.model needs `pretrained` (hub id or path) or `config`")
        cfg = LlamaConfig(vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
                          eos_token_id=self.tokenizer.eos_token_id, **model["config"])
        return LlamaForCausalLM(cfg).to(dtype)

    # ------------------------------------------------------------ training

    def train_batch(self, step: int, micro: int):
        index = step * self.grad_accum + micro
        epoch, position = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:
            lengths = [len(ids) for ids, _ in self.encoded]
            self._batches = data.bucketed_batches(lengths, self.batch_size, self.seed, epoch)
            self._epoch = epoch
        rows = [self.encoded[i] for i in self._batches[position]]
        return data.collate(rows, self.tokenizer.pad_token_id, self.device)

    def loss(self, model, batch):
        return model(**batch).loss

    # ------------------------------------------------------------ evaluation

    def _few_shot_prefix(self, k: int) -> str:
        shots = self.train[:k]
        return "".join(data.prompt(self.dataset, ex.question) + " " + ex.answer + "\n\n"
                       for ex in shots)

    @torch.no_grad()
    def generate(self, model, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completions, batched with left padding."""
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        tok.padding_side = "right"
        out = model.generate(input_ids=enc["input_ids"].to(self.device),
                             attention_mask=enc["attention_mask"].to(self.device),
                             max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        # a completion ends where the model starts another question
        return [t.split("\n\n")[0].split("Question:")[0] for t in texts]

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        if self.eval_mode == "loss":
            loss, n = self._held_out_loss(model, self.eval_dataset, self.test)
            out = {self.metric: loss, "eval_questions": n}
            for name, test in self.also_eval.items():
                out[f"{name}_loss"], out[f"{name}_questions"] = self._held_out_loss(
                    model, name, test)
            return out
        accuracy, n = self._score(model, self.eval_dataset, self.test)
        out = {self.metric: accuracy, "eval_questions": n}
        for name, test in self.also_eval.items():
            out[f"{name}_acc"], out[f"{name}_questions"] = self._score(model, name, test)
        return out

    def _held_out_loss(self, model, dataset: str, test: list) -> tuple[float, int]:
        """(mean cross-entropy per answer token, examples) on a test set (teacher forcing)."""
        limit = self.eval_cfg.get("limit")
        examples = test[:limit] if limit else test
        batch = self.eval_cfg.get("batch_size", 16)
        total = tokens = 0
        for start in self.eval_shard.take(range(0, len(examples), batch)):
            encoded = [data.encode(self.tokenizer, dataset, ex, self.max_length)
                       for ex in examples[start : start + batch]]
            inputs = data.collate(encoded, self.tokenizer.pad_token_id, self.device)
            n = (inputs["labels"][:, 1:] != -100).sum()  # the answer tokens predicted
            # the training loss is their mean (no answer tokens: a NaN mean, left out)
            total = total + torch.where(n > 0, self.loss(model, inputs).double() * n, 0.0)
            tokens = tokens + n
        sums = self.eval_shard.total({"loss": total, "tokens": tokens})
        return sums["loss"] / max(sums["tokens"], 1), len(examples)

    def _score(self, model, dataset: str, test: list) -> tuple[float, int]:
        """(accuracy, questions scored) by greedy generation on a test set."""
        limit = self.eval_cfg.get("limit")
        questions = test[:limit] if limit else test
        prefix = self._few_shot_prefix(self.eval_cfg.get("few_shot", 0))
        batch = self.eval_cfg.get("batch_size", 16)
        grade = is_equivalent if dataset in data.SYMBOLIC_ANSWERS else is_correct
        correct = 0
        for start in self.eval_shard.take(range(0, len(questions), batch)):
            chunk = questions[start : start + batch]
            prompts = [prefix + data.prompt(dataset, ex.question) for ex in chunk]
            completions = self.generate(model, prompts, self.eval_cfg.get("max_new_tokens", 256))
            correct += sum(grade(c, ex.answer) for c, ex in zip(completions, chunk))
        return self.eval_shard.total({"correct": correct})["correct"] / len(questions), \
            len(questions)

    def describe(self) -> dict:
        return {"params_trainable": sum(p.numel() for p in self.model.parameters()
                                        if p.requires_grad),
                "params_total": sum(p.numel() for p in self.model.parameters()),
                "data": {"dataset": self.dataset, "train_examples": len(self.train),
                         "eval_dataset": self.eval_dataset,
                         "eval_questions": min(len(self.test), self.eval_cfg.get("limit")
                                               or len(self.test)),
                         "few_shot": self.eval_cfg.get("few_shot", 0)},
                "memory_estimate": self.memory, "tokens_per_batch": self.tokens_per_batch}
