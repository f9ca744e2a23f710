"""Optimizers of the reproduced papers and their baselines, as torch.optim optimizers, and the
registry that lists every one of them (modelled on torch's optim_db).

This package imports nothing of ours: tasks and sweeps depend on it, never the reverse. Each of
our classes is exported here under its name (`optim.S3`), the `_target_` its config names.
`REGISTRY` lists every optimizer config, conf/optim/<name>.yaml, with its class, its source
and what the generic tests, the benchmark and the memory estimates need; AdamW, Adam, NAdam and
SGD are torch.optim's own. A test holds it equal to conf/optim/*.yaml, one entry per file, and
each file's values equal to its class's defaults except where `config_differs` says why.

Adding an optimizer: its module, its yaml, its import and entry here, and its own math test;
the generic tests (API, state_dict resume, bf16, fused equals foreach) pick it up from here.
"""

import torch

from optim.adan import Adan
from optim.matrix import MatrixOptimizer
from optim.muon import MuAdam, Muon, MuonPE, SoftMuon
from optim.registry import AUX, PRETRAIN_WD, RUN_LENGTH, SOFT, OptimSpec, markdown_table
from optim.routing import infer_roles, is_matrix_optimizer, param_groups, param_roles
from optim.s3 import S3
from optim.sign import Lion, SignSGD, Signum
from optim.smuon import SMuon
from optim.softsign import HardSwitchSign, SoftSignum
from optim.stosign import StochasticSign, StoSignSGD

# How the Moonlight-style configs differ from the Muon / SoftMuon class defaults, and why.
MOONLIGHT = {
    "shape_scale": "moonlight: lr·0.2·sqrt(max(rows, cols)), the update RMS of AdamW's",
    "weight_decay": "0.1 on every parameter (DistributedMuon's default)",
    "aux_lr": "the matrix lr: one lr for both (the RMS matching is what allows it)",
    "aux_betas": "(0.95, 0.95), DistributedMuon's adamw_betas",
    "aux_eps": "1e-8, DistributedMuon's adamw_eps",
    "aux_weight_decay": "the matrix weight decay (one group's decay for both)"}

REGISTRY: tuple[OptimSpec, ...] = (
    OptimSpec(
        "s3", S3, "Peng et al. 2025, arXiv:2507.06464 (SoftSignSGD)", state_buffers=2,
        fused=True, example={"lr": 1e-2},
        fused_variants={
            "p3": {"lr": 1e-2, "weight_decay": 0.1},
            "p2_plain": {"lr": 1e-2, "p": 2, "nesterov": False, "beta2": 0.99},
            "p3_beta2_nesterov": {"lr": 1e-2, "beta2": 0.99},  # the look-ahead reads β2
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
        "softsignum_unclamped", SoftSignum, "Feoktistov et al., ICML 2026, arXiv:2605.31371 "
        "(τ unclamped, as the text describes the schedule)", state_buffers=1, fused=True,
        example={"lr": 1e-2, **SOFT, "tau_max": 1e9},
        config_differs={"total_steps": RUN_LENGTH,
                        "tau_max": "1e9: the schedule as the paper's text describes it (the "
                                   "official class clamps τ at 20)"}),
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
        "softmuon_moonlight", SoftMuon, "Feoktistov et al., ICML 2026, arXiv:2605.31371 (the "
        "official repo's Megatron/Moonlight-style SoftMuon, softmuon/d_softmuon.py)",
        state_buffers=1, matrix=True, example={"lr": 0.02, "aux_lr": 1e-2, **SOFT},
        config_differs={"total_steps": RUN_LENGTH, **MOONLIGHT}),
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
        "muon_moonlight", Muon, "Liu et al. 2025, arXiv:2502.16982 (Moonlight's RMS-matched "
        "Muon, as the Softsign repo's softmuon/d_softmuon.py runs it)", state_buffers=1,
        matrix=True, example={"lr": 0.02, "aux_lr": 1e-2}, config_differs=MOONLIGHT),
    OptimSpec(
        "muon_pe", MuonPE, "Massena et al. 2026, arXiv:2605.19781 (the SMuon authors' Muon: "
        "Polar Express, bias-corrected Nesterov)", state_buffers=1, matrix=True,
        example={"lr": 0.02, "aux_lr": 1e-2},
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


def readme_table() -> str:
    """The README's optimizer table (`python -c "import optim; print(optim.readme_table())"`)."""
    return markdown_table(REGISTRY)


__all__ = [
    "BY_NAME", "MatrixOptimizer", "OptimSpec", "REGISTRY", "STATE_BUFFERS", "infer_roles",
    "is_matrix_optimizer", "ours", "param_groups", "param_roles", "readme_table",
    "Adan", "HardSwitchSign", "Lion", "MuAdam", "Muon", "MuonPE", "S3", "SMuon", "SignSGD",
    "Signum", "SoftMuon", "SoftSignum", "StoSignSGD", "StochasticSign",
]
