"""`reproduce.py TABLE scale=paper --plan`: every run validated and costed, nothing trained."""

import math
import subprocess
import sys

import pytest
import torch

from sweeps import spec
from sweeps.plan import Hardware, plan_table
from tasks.cifar.task import CifarTask
from tasks.lora.task import LoraMathTask
from tasks.nanogpt.task import NanoGPTTask
from tests.conftest import ROOT, compose_cfg


def paper_plan(name, tmp_path, *extra, scale="paper"):
    overrides, _ = spec.launcher_overrides(scale, [f"runs_root={tmp_path / 'runs'}",
                                                   f"data_root={tmp_path / 'data'}", *extra])
    table = spec.load(name).at(scale)
    runs = table.expand(overrides, aux=table.placeholder_aux())
    return plan_table(f"table-{name}-{scale}", scale, runs, Hardware("h100", 0.4))


@pytest.mark.parametrize("name,scale", [(n, s) for n in spec.available()
                                        for s in spec.load(n).scales if spec.is_paper_scale(s)])
@pytest.mark.slow
def test_every_table_plans_at_paper_scale_without_training(name, scale, tmp_path):
    text, invalid = paper_plan(name, tmp_path, scale=scale)
    assert invalid == 0, text
    assert "total: " in text and "GPU-hours" in text
    assert "launcher: slurm, 1 GPU(s) per node" in text
    # nothing prepared here but the embedded corpus: the plan says how to prepare the rest
    if "MISSING" in text:
        assert "data to prepare first:" in text and "python scripts/prepare_data.py" in text
    assert not (tmp_path / "runs").exists()  # no run dir, no manifest: nothing trained


@pytest.mark.slow
def test_an_invalid_run_is_reported_with_its_key_and_the_cli_exits_2(tmp_path):
    text, invalid = paper_plan("quickstart", tmp_path, "task.model.n_head=3")
    assert invalid == 16 and "must be divisible by task.model.n_head (3)" in text
    cli = subprocess.run([sys.executable, "scripts/reproduce.py", "quickstart", "scale=paper",
                          "--plan", f"runs_root={tmp_path}", "optim.lr=-1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "INVALID" in cli.stdout
    assert "optim (adamw): Invalid optim.lr: -1 (must be a finite number > 0)" in cli.stdout
    assert not (tmp_path / "table-quickstart-paper").exists()


@pytest.mark.slow
def test_gpu_hours_follow_the_stated_model(tmp_path):
    """Halving the MFU doubles the hours; a bad GPU name is an error that lists the known."""
    runs = spec.load("smuon_gpt").at("paper").expand([f"runs_root={tmp_path}",
                                                        "launcher=slurm"])[:1]
    fast, _ = plan_table("t", "paper", runs, Hardware("h100", 0.4))
    slow, _ = plan_table("t", "paper", runs, Hardware("h100", 0.2))

    def hours(text):
        return float(text.split("total: ")[1].split(" GPU-hours")[0])

    assert hours(slow) == pytest.approx(2 * hours(fast), rel=0.01)
    with pytest.raises(ValueError, match=r"--gpu must be one of .*'h100'.*got 'h1000'"):
        Hardware("h1000", 0.4)


def test_paper_scale_gets_its_gpus_however_the_launcher_is_named():
    """The GPUs and CPUs a paper-scale run needs belong to the scale: naming the launcher
    (to set a partition) keeps them; training on CPUs is asked for with device=cpu; a GPU
    count of 0 without it is refused."""
    extra, notes = spec.launcher_overrides("paper", ["optim.lr=1e-3"])
    assert extra[-3:] == ["launcher=slurm", "launcher.gpus_per_node=1",
                          "launcher.cpus_per_task=8"] and notes
    typed, _ = spec.launcher_overrides("paper", ["launcher=slurm", "launcher.partition=gpu"])
    assert typed[-2:] == ["launcher.gpus_per_node=1", "launcher.cpus_per_task=8"]
    given, _ = spec.launcher_overrides("paper", ["launcher.cpus_per_task=16"])
    assert "launcher.cpus_per_task=8" not in given
    four, _ = spec.launcher_overrides("paper", ["launcher=slurm", "launcher.tasks_per_node=4"])
    assert "launcher.gpus_per_node=4" in four
    local, _ = spec.launcher_overrides("paper", ["launcher=local"])
    assert local == ["launcher=local", "launcher.gpus_per_node=1"]
    gres, _ = spec.launcher_overrides("paper", ["launcher.gres=gpu:a100:1"])
    assert not any(o.startswith("launcher.gpus_per_node") for o in gres)
    cpu, notes = spec.launcher_overrides("paper", ["launcher=slurm", "device=cpu"])
    assert not any(o.startswith("launcher.gpus_per_node") for o in cpu)
    assert any("device=cpu" in n for n in notes)
    with pytest.raises(spec.SpecError, match=r"launcher.gpus_per_node=0: every job would "
                                             r"train on CPUs. Give device=cpu"):
        spec.launcher_overrides("paper", ["launcher=slurm", "launcher.gpus_per_node=0"])
    assert spec.launcher_overrides("paper", ["launcher=debug"]) == (["launcher=debug"], [])
    assert spec.launcher_overrides("tiny", []) == (["launcher=debug"], [])
    assert spec.launcher_overrides("tiny", ["launcher=slurm"]) == (["launcher=slurm"], [])
    assert spec.launcher_warnings("paper", {"name": "slurm", "gpus_per_node": 0})
    assert not spec.launcher_warnings("paper", {"name": "slurm", "gpus_per_node": 1})
    assert not spec.launcher_warnings("tiny", {"name": "slurm", "gpus_per_node": 0})


def _resolved(*overrides):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_cfg(list(overrides)), resolve=True)


def test_gpt_flops_match_the_standard_formula():
    """nanoGPT's count: 6N + 12·L·d·T FLOPs per token for training (PaLM, appendix B)."""
    cfg = _resolved("task=gpt2_124m", "steps=10", "grad_accum=2", "eval_every=10")
    cost = NanoGPTTask.cost(cfg)
    m = cfg["task"]["model"]
    assert cost.params == 124_373_760  # GPT-2 small with the vocab padded to 50304, tied
    tokens = 10 * 2 * cfg["task"]["batch_size"] * m["block_size"]
    formula = 6 * cost.params + 12 * m["n_layer"] * m["n_embd"] * m["block_size"]
    assert cost.train_flops / tokens == pytest.approx(formula, rel=0.02)
    assert cost.compute == "fp32"
    assert _resolved("task=gpt2_124m", "precision=bf16")["precision"]["name"] == "bf16"
    assert NanoGPTTask.cost(_resolved("task=gpt2_124m", "precision=bf16")).compute == "bf16"


def test_resnet18_flops_per_image():
    """ResNet-18 (CIFAR stem) is 0.56 GMACs a 32×32 image forward: ×2 FLOPs, ×3 training."""
    cost = CifarTask.cost(_resolved("task=cifar10_resnet18", "steps=1", "eval_every=1"))
    assert cost.train_flops / 128 == pytest.approx(3 * 2 * 0.556e9, rel=0.02)
    assert cost.params == 11_173_962


def test_lora_counts_what_peft_trains(tmp_path):
    """The plan's count of trained LoRA parameters equals peft's on a real tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.lora.task import TINY_VOCAB

    cfg = _resolved("task=lora_tiny_arith", f"data_root={tmp_path}")
    task = cfg["task"]
    cost = LoraMathTask.cost(cfg)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=TINY_VOCAB, **task["model"]["config"]))
    n_base = sum(p.numel() for p in base.parameters())
    lora = task["lora"]
    model = get_peft_model(base, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"],
                                            target_modules=lora["target_modules"],
                                            modules_to_save=lora["modules_to_save"],
                                            task_type="CAUSAL_LM"))
    assert cost.trained_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert cost.params == n_base


def test_a_7b_model_is_sized_without_downloading_it(tmp_path):
    cfg = _resolved("task=lora_qwen7b_numina", f"data_root={tmp_path}")
    cost = LoraMathTask.cost(cfg)
    assert cost.params == pytest.approx(7.62e9, rel=0.01)  # Qwen2.5-7B
    assert cost.memory_bytes["weights"] == pytest.approx(2 * cost.params)  # bf16
    assert cost.compute == "bf16"
    assert [d.ready for d in cost.data] == [False, False, False]
    assert cost.data[-1].prepare == "hf download Qwen/Qwen2.5-7B"
    with torch.device("cpu"):  # building on meta left the default device alone
        assert torch.empty(1).device.type == "cpu"


@pytest.mark.slow
def test_the_launch_sizes_requeues_for_the_longest_run_or_refuses(tmp_path):
    """softsign_llm's 774M runs plan at up to ~100 hours each: jobs of 240 min × 6 cannot hold
    them. `max_requeues: auto` (the default) takes enough slots for the longest; a number
    given that cannot is refused at launch with the setting that can; that setting holds."""
    text, _ = paper_plan("softsign_llm", tmp_path)
    line = next(x for x in text.splitlines() if x.startswith("time: "))
    auto = int(line.split("launcher.max_requeues=")[1].split(" ")[0])
    need = int(line.split(" need ")[1].split(";")[0])
    assert auto == need > 5, line
    assert f"requeued up to {auto} times" in text
    refused, _ = paper_plan("softsign_llm", tmp_path, "launcher.max_requeues=5")
    line = next(x for x in refused.splitlines() if x.startswith("REFUSED at launch: "))
    assert "launcher.max_requeues=5 cannot finish the runs" in line
    assert f"Fix: launcher.max_requeues={need} (or auto)" in line
    fitted, _ = paper_plan("softsign_llm", tmp_path, f"launcher.max_requeues={need}")
    assert f"time: launcher.max_requeues={need} holds every run" in fitted
    short, _ = paper_plan("smuon_gpt", tmp_path)
    assert "time: launcher.max_requeues=5 (auto: " in short  # the floor, for preemptions
    endless, _ = paper_plan("softsign_llm", tmp_path, "launcher.timeout_min=30")
    assert "REFUSED at launch: " in endless
    assert "more than the 40 launcher.max_requeues=auto gives" in endless


def _sweep_plan(tmp_path, *overrides):
    from sweeps.plan import plan_sweep

    text, invalid = plan_sweep("s", [f"runs_root={tmp_path / 'runs'}",
                                     f"data_root={tmp_path / 'data'}", *overrides],
                               Hardware("h100", 0.4))
    assert not invalid, text
    memory = float(text.split("memory: at most ")[1].split(" GB")[0])
    hours = float(text.split("total: ")[1].split(" GPU-hours")[0].split("–")[-1])
    return text, memory, hours


def test_a_7b_full_fine_tune_fits_8x80gb_only_sharded(tmp_path):
    """Every weight of Mistral-7B trains (lora: null): weights, gradients and AdamW state need
    ~100 GB a GPU replicated; FSDP2 over 8 GPUs holds an eighth of them each."""
    common = ["task=full_mistral7b_numina", "optim=adamw", "launcher=slurm",
              "launcher.gpus_per_node=8", "launcher.tasks_per_node=8", "grad_accum=8",
              "steps=100", "eval_every=100"]
    replicated, memory_ddp, _ = _sweep_plan(tmp_path, *common)
    sharded, memory_fsdp, _ = _sweep_plan(tmp_path, *common, "parallel=fsdp")
    assert "DOES NOT FIT a h100 with 80 GB" in replicated and memory_ddp > 80
    assert "(fits a h100 with 80 GB" in sharded and memory_fsdp < 20
    cfg = _resolved("task=full_mistral7b_numina", f"data_root={tmp_path}")
    cost = LoraMathTask.cost(cfg)
    assert cost.trained_params == cost.params  # a full fine-tune
    assert "8N FLOPs per token" in cost.basis  # forward, both backwards, recomputation


def test_greedy_decoding_is_timed_at_memory_bandwidth(tmp_path):
    """Each generated token of an eval batch reads every weight: 512 new tokens for 1319
    questions in batches of 32 is 42 × 512 weight reads of 14.5 GB an eval, timed at 60% of the
    H100's 3.35 TB/s (not at FLOP speed, where it took a fiftieth of that)."""
    common = ["task=lora_mistral7b_numina", "launcher=slurm", "launcher.gpus_per_node=1",
              "steps=100", "eval_every=100"]
    _, _, short = _sweep_plan(tmp_path, *common, "task.eval.max_new_tokens=1")
    _, _, long = _sweep_plan(tmp_path, *common, "task.eval.max_new_tokens=513")
    cfg = _resolved("task=lora_mistral7b_numina", f"data_root={tmp_path}")
    weight_bytes = 2 * LoraMathTask.cost(cfg).params
    expected = 42 * 512 * weight_bytes / (0.6 * 3.35e12) / 3600
    assert long - short == pytest.approx(expected, rel=0.05)


def test_the_plan_sizes_host_memory_for_weights_loaded_through_it(tmp_path):
    """An 8B LoRA run loads ~16 GB of bf16 weights through host memory, and its compiled
    optimizer starts a compile worker per CPU: `mem_gb: auto` asks for them; null leaves the
    partition's default and says what is needed; a number too small is refused with the fix,
    and the fix holds."""
    def line(text, start="host memory: "):
        return next(x for x in text.splitlines() if x.startswith(start))

    auto = line(paper_plan("stosign_math", tmp_path)[0])
    need = int(auto.split("launcher.mem_gb=")[1].split(" ")[0])
    assert "weights loaded 16.1" in auto and "compile workers 4.0" in auto, auto
    checkpoint = float(auto.split("checkpoint load ")[1].split(" ")[0])
    assert need == math.ceil((4 + 16.06 + checkpoint + 4.0) * 1.2)
    unset = line(paper_plan("stosign_math", tmp_path, "launcher.mem_gb=null")[0])
    assert "the partition's default" in unset and f"need up to {need} GB" in unset
    small = line(paper_plan("stosign_math", tmp_path, "launcher.mem_gb=16")[0], "REFUSED")
    assert f"launcher.mem_gb=16 cannot hold runs that need {need} GB" in small
    fixed = line(paper_plan("stosign_math", tmp_path, f"launcher.mem_gb={need}")[0])
    assert "holds every run" in fixed


def test_a_resume_loads_the_whole_checkpoint_into_each_task(tmp_path):
    """GPT-2 large (774M) with AdamW: fp32 weights and two state buffers, ~9.3 GB, loaded
    whole by every task on resume; under parallel=fsdp each of 8 tasks loads its eighth."""
    common = ["task=gpt2_774m", "optim=adamw", "launcher=slurm", "steps=100",
              "eval_every=100"]
    whole, _, _ = _sweep_plan(tmp_path, *common, "launcher.gpus_per_node=1")
    per_task = float(whole.split("checkpoint load ")[1].split(" ")[0])
    assert per_task == pytest.approx(774e6 * 12 / 1e9, rel=0.05), whole
    eight = ["launcher.gpus_per_node=8", "launcher.tasks_per_node=8", "grad_accum=8"]
    sharded, _, _ = _sweep_plan(tmp_path, *common, *eight, "parallel=fsdp")
    assert float(sharded.split("checkpoint load ")[1].split(" ")[0]) == pytest.approx(
        per_task / 8, rel=0.05)
    assert "× (base 4.0" in sharded and "8 task(s) a node" in sharded


def test_hours_are_a_range_per_task_kind_and_a_measured_mfu_replaces_it(tmp_path):
    """A GPT near 25–45% MFU, a ResNet or ViT near 6–12%: the same FLOPs plan at different
    hours. Where scripts/gpu_check.py measured the task on the GPU planned for, its MFU is
    used (here a written report); on another GPU it is not."""
    import json

    from sweeps.plan import MFU, Planner

    cfg = _resolved("task=gpt2_124m", "steps=100", "eval_every=100", f"data_root={tmp_path}")
    assumed = Planner(Hardware("h100")).plan_run("r", 1e-3, 0, "k", "new", cfg)
    low, high = MFU["NanoGPTTask"]
    assert assumed.gpu_hours / assumed.gpu_hours_low == pytest.approx(high / low, rel=0.01)
    assert assumed.mfu == "NanoGPTTask 0.25–0.45 (assumed)"
    report = tmp_path / "gpu_check_cuda.json"
    report.write_text(json.dumps({
        "provenance": {"device": "NVIDIA H100 80GB HBM3"},
        "cells": {"s3_spikes": {"task_target": cfg["task"]["_target_"],
                                "mfu_vs_vendor_bf16_peak": 0.3},
                  "smuon_gpt": {"task_target": cfg["task"]["_target_"],
                                "mfu_vs_vendor_bf16_peak": 0.35}}}))
    measured = Planner(Hardware("h100", measured=report)).plan_run("r", 1e-3, 0, "k", "new",
                                                                    cfg)
    assert measured.mfu == "NanoGPTTask 0.3–0.35 (measured, gpu_check_cuda.json)"
    assert measured.gpu_hours == pytest.approx(assumed.gpu_hours * 0.25 / 0.3, rel=0.01)
    other = Planner(Hardware("a100", measured=report)).plan_run("r", 1e-3, 0, "k", "new", cfg)
    assert other.mfu.endswith("(assumed)")
    given = Planner(Hardware("h100", 0.5, measured=report)).plan_run("r", 1e-3, 0, "k", "new",
                                                                      cfg)
    assert given.mfu == "NanoGPTTask 0.5 (given)" and given.gpu_hours == given.gpu_hours_low
