"""Every optimizer config of the project as one list of specs (modelled on torch's optim_db).

The generic tests (API, state_dict resume, bf16, fused equals foreach), the benchmark, the LoRA
memory estimate and the README's optimizer table read this list; a test holds it equal to
conf/optim/*.yaml, one entry per file, and holds each file's values equal to its class's
defaults except where `config_differs` says why. Adding an optimizer: its module, its yaml, one
entry here and its own math test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from optim.adan import Adan
from optim.muon import MuAdam, Muon, SoftMuon
from optim.s3 import S3
from optim.sign import Lion, SignSGD, Signum
from optim.smuon import SMuon
from optim.softsign import HardSwitchSign, SoftSignum
from optim.stosign import StochasticSign, StoSignSGD

TEST_STEPS = 24  # the generic tests' run length; `example` schedules are sized for it


@dataclass(frozen=True)
class OptimSpec:
    name: str  # conf/optim/<name>.yaml, chosen with `optim=<name>`
    cls: type
    paper: str  # where the update rule comes from
    state_buffers: int  # per-parameter fp32 state tensors at the config's values
    fused: bool = False  # ours, and takes fused=True: one compiled pass per tensor
    matrix: bool = False  # hidden matrices take the matrix update, the rest an aux AdamW
    example: dict = field(default_factory=dict)  # constructor arguments for generic tests
    # named constructor arguments that reach every branch of the fused kernel
    fused_variants: dict = field(default_factory=dict)
    config_differs: dict = field(default_factory=dict)  # yaml key → why it is not the default

    @property
    def ours(self) -> bool:
        """Implemented here (torch.optim's own are baselines, tested by torch)."""
        return self.cls.__module__.startswith("optim.")

    @property
    def target(self) -> str:
        return f"{'optim' if self.ours else self.cls.__module__.rsplit('.', 1)[0]}." \
               f"{self.cls.__name__}"


RUN_LENGTH = "the run's steps, never typed twice"
AUX = ("the auxiliary AdamW of the Muon reference setup (lr 3e-4, betas (0.9, 0.95), eps "
       "1e-10, no decay) for embeddings, head, norms and biases")
PRETRAIN_WD = "0.1, the weight decay of the AdamW pretraining baselines [assumption]"
SOFT = {"total_steps": TEST_STEPS, "sign_fraction": 0.6}

REGISTRY: tuple[OptimSpec, ...] = (
    OptimSpec(
        "s3", S3, "Peng et al. 2025, arXiv:2507.06464 (SoftSignSGD)", state_buffers=2,
        fused=True, example={"lr": 1e-2},
        fused_variants={
            "p3": {"lr": 1e-2, "weight_decay": 0.1},
            "p2_plain": {"lr": 1e-2, "p": 2, "nesterov": False, "beta2": 0.99},
            "p1": {"lr": 1e-2, "p": 1}, "p4": {"lr": 1e-2, "p": 4},
            "p2.5": {"lr": 1e-2, "p": 2.5}},
        config_differs={"weight_decay": PRETRAIN_WD}),
    OptimSpec(
        "softsignum", SoftSignum, "Feoktistov et al., ICML 2026, arXiv:2605.31371",
        state_buffers=1, fused=True, example={"lr": 1e-2, **SOFT},
        fused_variants={
            "": {"lr": 1e-2, "total_steps": 12, "sign_fraction": 0.5, "weight_decay": 0.1},
            "nesterov": {"lr": 1e-2, "total_steps": 12, "sign_fraction": 0.25,
                         "nesterov": True}},
        config_differs={"total_steps": RUN_LENGTH}),
    OptimSpec(
        "hardswitchsign", HardSwitchSign, "Feoktistov et al., ICML 2026, arXiv:2605.31371 "
        "(the hard-switch ablation)", state_buffers=1, fused=True,
        example={"lr": 1e-2, **SOFT},
        fused_variants={"": {"lr": 1e-2, "total_steps": 12, "sign_fraction": 0.5,
                             "dampening": 0.1}},
        config_differs={"total_steps": RUN_LENGTH}),
    OptimSpec(
        "softmuon", SoftMuon, "Feoktistov et al., ICML 2026, arXiv:2605.31371",
        state_buffers=1, matrix=True, example={"lr": 0.02, "aux_lr": 1e-2, **SOFT},
        config_differs={"total_steps": RUN_LENGTH, "aux_lr": AUX, "aux_betas": AUX,
                        "aux_eps": AUX, "aux_weight_decay": AUX}),
    OptimSpec(
        "stosignsgd", StoSignSGD, "Yu et al. 2026, arXiv:2604.15416", state_buffers=2,
        fused=True, example={"lr": 1e-2, "seed": 3},
        fused_variants={"": {"lr": 1e-2, "seed": 5, "weight_decay": 0.1}},
        config_differs={"weight_decay": PRETRAIN_WD, "seed": "the run's seed"}),
    OptimSpec(
        "stochastic_sign", StochasticSign, "Yu et al. 2026, arXiv:2604.15416 (the "
        "sign-conversion framework)", state_buffers=2, fused=True,
        example={"lr": 1e-2, "base": "adam"},
        fused_variants={
            "adam_current": {"lr": 1e-2, "base": "adam", "envelope": "current"},
            "sgd_max": {"lr": 1e-2, "base": "sgd"},
            "deterministic_adam": {"lr": 1e-2, "base": "adam", "stochastic": False}},
        config_differs={"weight_decay": PRETRAIN_WD, "seed": "the run's seed"}),
    OptimSpec(
        "smuon", SMuon, "Massena et al. 2026, arXiv:2605.19781", state_buffers=1, matrix=True,
        example={"lr": 0.02, "first_select": 5, "select_every": 8, "moment_type": "padam",
                 "aux_lr": 1e-2},
        config_differs={"aux_lr": AUX, "aux_betas": AUX, "aux_eps": AUX,
                        "aux_weight_decay": AUX}),
    OptimSpec(
        "muadam", MuAdam, "Veprikov et al. 2025, arXiv:2510.10777", state_buffers=2,
        matrix=True, example={"lr": 0.02, "aux_lr": 1e-2},
        config_differs={"aux_lr": AUX, "aux_betas": AUX, "aux_eps": AUX,
                        "aux_weight_decay": AUX}),
    OptimSpec(
        "muon", Muon, "Jordan et al. 2024, kellerjordan.github.io/posts/muon", state_buffers=1,
        matrix=True, example={"lr": 0.02, "aux_lr": 1e-2},
        config_differs={"aux_lr": AUX, "aux_betas": AUX, "aux_eps": AUX,
                        "aux_weight_decay": AUX}),
    OptimSpec(
        "signum", Signum, "Bernstein et al. 2018, arXiv:1802.04434", state_buffers=1,
        fused=True, example={"lr": 1e-2},
        fused_variants={"": {"lr": 1e-2, "weight_decay": 0.1}}),
    OptimSpec(
        "signsgd", SignSGD, "Bernstein et al. 2018, arXiv:1802.04434", state_buffers=0,
        fused=True, example={"lr": 1e-2},
        fused_variants={"": {"lr": 1e-2, "weight_decay": 0.1}},
        config_differs={"lr": "1e-4: sign steps move every coordinate by lr [assumption]"}),
    OptimSpec(
        "lion", Lion, "Chen et al. 2023, arXiv:2302.06675", state_buffers=1, fused=True,
        example={"lr": 3e-3},
        fused_variants={"": {"lr": 1e-2, "weight_decay": 0.1}},
        config_differs={"lr": "the paper's rule: an lr 3-10x below AdamW's (1e-3)",
                        "weight_decay": "the paper's rule: a decay 3-10x above AdamW's (0.1)"}),
    OptimSpec(
        "adan", Adan, "Xie et al. 2022, arXiv:2208.06677", state_buffers=4, fused=True,
        example={"lr": 1e-2},
        fused_variants={"": {"lr": 1e-2}},
        config_differs={"weight_decay": "0.02, a decoupled decay for training from scratch "
                                        "[assumption; the authors' class default is 0]"}),
    OptimSpec(
        "adamw", torch.optim.AdamW, "Loshchilov & Hutter 2019, arXiv:1711.05101",
        state_buffers=2,
        config_differs={"betas": "(0.9, 0.95), the LLM pretraining convention [assumption]",
                        "weight_decay": "0.1, the LLM pretraining convention [assumption]"}),
    OptimSpec("adam", torch.optim.Adam, "Kingma & Ba 2015, arXiv:1412.6980", state_buffers=2),
    OptimSpec(
        "nadam", torch.optim.NAdam, "Dozat 2016, ICLR workshop", state_buffers=2,
        config_differs={key: "matched to the AdamW baseline [assumption]"
                        for key in ("lr", "betas", "weight_decay", "decoupled_weight_decay")}),
    OptimSpec(
        "sgd", torch.optim.SGD, "Polyak 1964 / Sutskever et al. 2013 (Nesterov momentum)",
        state_buffers=1,
        config_differs={key: "the CIFAR ResNet recipe: lr 0.1, Nesterov momentum 0.9, decay "
                             "5e-4 (He et al. 2016, arXiv:1512.03385)"
                        for key in ("lr", "momentum", "nesterov", "weight_decay")}),
)

BY_NAME = {spec.name: spec for spec in REGISTRY}
STATE_BUFFERS = {spec.cls.__name__: spec.state_buffers for spec in REGISTRY}


def ours() -> list[OptimSpec]:
    return [spec for spec in REGISTRY if spec.ours]


def markdown_table() -> str:
    """The README's optimizer table."""
    rows = ["| `optim=` | class | update from |", "|---|---|---|"]
    for spec in REGISTRY:
        extra = " (matrix update + aux AdamW)" if spec.matrix else (
            " (`fused=true`)" if spec.fused else "")
        rows.append(f"| `{spec.name}` | `{spec.target}`{extra} | {spec.paper} |")
    return "\n".join(rows)
