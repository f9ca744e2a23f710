"""SMuon: steepest descent in a Schatten-(p+1) geometry with a per-layer p chosen from data
(Massena et al. 2026; arXiv:2605.19781), step for step as the authors' code runs it
(github deel-ai-papers/schatten-muon @749ba8d, smuon/optimizers/adaptive.py
SingleDeviceSMuonWithAuxAdam / SMuonWithAuxAdam).

    m ← lerp(m, g, 1−β1);  n = lerp(m/(1−β1^t), g, 1−β1)          (bias-corrected Nesterov)
    moment_type none:   g̃ = n
    moment_type adam:   D = (v̂ + ε)^(−1/4);         g̃ = D ⊙ n
    moment_type padam:  D = (v̂ + ε)^(−1/(2(p+1)));  g̃ = D ⊙ n      (v̂ = v/(1−β2^t), v of g²)
    O = U·Σ^(1/p)·Vᵀ of g̃ (then D ⊙ O), pinned: O ← O·target/(‖O‖_F + 1e-8)
    θ ← θ·(1 − lr·λ) − lr·O;  a matrix with ‖g̃‖_F < 1e-8 is left alone (no step, no decay)
Norm pinning (`pin`), as the authors' code: the update's Frobenius norm is set to a target that
does not depend on the gradient's spectrum, so one lr transfers across p.
    kappa (default): adam/padam → √min(rows, cols)·κ^(1/p), with
                     κ = (lr_aux·ρ_aux) / (lr / √max(rows, cols)),
                     ρ_aux = sqrt((1−β1_aux)/(1+β1_aux)) (`kappa_regime: noisy`) or 1 (`determ`):
                     Muon's step at p=∞, the aux Adam's per-coordinate step at p=1;
                     none → √min(rows, cols) (no Adam end to move towards).
    muon:            √min(rows, cols) for every type (the authors' kappa_pin=False).
    none:            adam/padam unpinned, O·sqrt(max(1, rows/cols)) (an option of ours, not
                     the authors').
Special cases: none, p=1 → normalized momentum SGD; none, p=∞ → Muon's direction;
padam, p=1 → Adam's n/sqrt(v̂ + ε) up to the pin; adam, p=∞ → MuAdam's D ⊙ polar(D ⊙ n) up to
the pin.

The map Σ ↦ Σ^(1/p) (`exact=False`, the default) is the authors' (optim/spectral.py
`schatten_power_authors`): the Polar Express factor, a binomial series of order ≤ 5 around it,
and the plain polar factor wherever 1/p ≤ 1.01/p_max; same-shape matrices (transposes grouped
with their shape, as theirs) form one batch, and a batch of more than one matrix takes the polar
branch below 1.01/10 whatever p_max (their batched call leaves pmax at 10). The series is 5-36%
off the exact map on condition numbers 10-100: the method as run. Its iterations run in bf16
on accelerators, as theirs, and in fp32 on CPU (`ns_dtype: auto`; CPU bf16 matmuls are ~30x
slower; the two differ by 2-4%, scripts/bench_optim.py); `ns_dtype=bf16` is theirs op for op
on any device. `exact=True` takes the fp64 eigendecomposition of U·Σ^(1/p)·Vᵀ for every p
instead (the reference).

Choosing p (optim/p_selection.py: the criteria as theirs), per layer, unless `fixed_p`: p
starts at p_max and is chosen again before the update of steps first_select+1 and
k·select_every+1 (the authors' loop selects at its 0-based steps 10, 100, 200, ...), from the
raw gradient, the momentum buffer before the step and the input Gram AᵀA that forward hooks
(`attach(model)`) record in that step's training forward: each hooked module's first call
(a micro-batch), summed over its rows, not averaged, summed over data-parallel ranks. A matrix
with no recorded Gram, or with a NaN (theirs; also an inf here) in its gradient or Gram, keeps
its p. These are the statistics of their nanoGPT and vision scripts (`use_gram=True`); their
LoRA script records raw activations, whose exact_momentum σ_A comes from a (batch,
tokens·features) reshape instead: not reproduced here.

Two switches serve the authors' p* study (experiments/mlp_exact_p.py), both off by default:
`apply_selected_p=False` chooses p on the schedule and logs it but keeps stepping with the
initial p (their script tracks p* beside an optimizer whose p never changes);
`select_nesterov=False` reads lerp(m, G, 1−β) without the look-ahead (their nesterov=False).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from optim._common import Batch, check_beta, check_lr_wd, muon_scale, require
from optim.matrix import MatrixOptimizer
from optim.p_selection import CRITERIA
from optim.spectral import (
    AUTHORS_BATCH_P_MAX,
    POLAR_ABOVE,
    as_matrix,
    ns_dtype_for,
    schatten_power,
    schatten_power_authors,
)

MOMENT_TYPES = ("none", "adam", "padam")
PINS = ("kappa", "muon", "none")
KAPPA_REGIMES = ("noisy", "determ")
SKIP_BELOW = 1e-8  # ‖g̃‖_F under which the authors leave a matrix alone


class SMuon(MatrixOptimizer):
    def __init__(self, params, lr: float = 0.02, beta1: float = 0.95, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, moment_type: str = "none",
                 criterion: str = "exact_momentum", p_min: float = 1.02, p_max: float = 10.0,
                 select_every: int = 100, first_select: int = 10, stat_ema: float = 0.95,
                 fixed_p: float | None = None, exact: bool = False, approx_rank: float = 0.1,
                 approx_min_rank: int = 50, ns_dtype: str = "auto", pin: str = "kappa",
                 kappa_regime: str = "noisy", select_nesterov: bool = True,
                 apply_selected_p: bool = True, aux_lr=None,
                 aux_betas=None, aux_eps=None, aux_weight_decay=None):
        check_lr_wd(lr, weight_decay)
        check_beta("beta1", beta1)
        check_beta("beta2", beta2)
        require(eps > 0, "eps", eps, "> 0")
        require(moment_type in MOMENT_TYPES, "moment_type", moment_type,
                f"one of {list(MOMENT_TYPES)}")
        require(pin in PINS, "pin", pin, f"one of {list(PINS)}")
        require(pin != "none" or moment_type != "none", "pin", pin,
                "'kappa' or 'muon' with moment_type none (an unpinned update has no scale)")
        require(kappa_regime in KAPPA_REGIMES, "kappa_regime", kappa_regime,
                f"one of {list(KAPPA_REGIMES)}")
        require(criterion in CRITERIA, "criterion", criterion, f"one of {list(CRITERIA)}")
        require(1.0 <= p_min < p_max, "p_min", p_min, f"in [1, p_max={p_max})")
        require(fixed_p is None or fixed_p >= 1.0, "fixed_p", fixed_p, "None or >= 1 (inf ok)")
        require(isinstance(select_every, int) and select_every > 0, "select_every",
                select_every, "a positive integer")
        require(isinstance(first_select, int) and first_select >= 0, "first_select",
                first_select, "an integer >= 0")
        require(0.0 <= stat_ema < 1.0, "stat_ema", stat_ema, "in [0, 1)")
        require(0.0 < approx_rank <= 1.0, "approx_rank", approx_rank, "in (0, 1]")
        require(isinstance(approx_min_rank, int) and approx_min_rank >= 1, "approx_min_rank",
                approx_min_rank, "a positive integer")
        require(ns_dtype in ("auto", "bf16", "fp32"), "ns_dtype", ns_dtype,
                "one of ['auto', 'bf16', 'fp32']")
        for name, flag in (("select_nesterov", select_nesterov),
                           ("apply_selected_p", apply_selected_p)):
            require(isinstance(flag, bool), name, flag, "true or false")
        defaults = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps,
                    "weight_decay": weight_decay, "moment_type": moment_type,
                    "criterion": criterion, "p_min": p_min, "p_max": p_max,
                    "select_every": select_every, "first_select": first_select,
                    "stat_ema": stat_ema, "fixed_p": fixed_p, "exact": exact,
                    "approx_rank": approx_rank, "approx_min_rank": approx_min_rank,
                    "ns_dtype": ns_dtype, "pin": pin, "kappa_regime": kappa_regime,
                    "select_nesterov": select_nesterov, "apply_selected_p": apply_selected_p}
        super().__init__(params, defaults, {"aux_lr": aux_lr, "aux_betas": aux_betas,
                                            "aux_eps": aux_eps,
                                            "aux_weight_decay": aux_weight_decay})
        self._grams: dict[torch.Tensor, torch.Tensor] = {}  # weight → AᵀA of this step
        self._names: dict[torch.Tensor, str] = {}
        self._hooks = []
        self._recording = False

    # ------------------------------------------------------------ activation statistics

    def attach(self, model: nn.Module) -> None:
        """Hook the Linear/Conv modules whose weights this optimizer treats as matrices."""
        matrices = {p for g in self.param_groups if g["use_matrix"] for p in g["params"]}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if weight is None or weight not in matrices:
                continue
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                self._names[weight] = f"{name}.weight"
                self._hooks.append(module.register_forward_hook(self._make_hook(weight)))
        self._recording = self._is_selection_step(self._next_step())

    def _make_hook(self, weight):
        def hook(module, inputs, output):
            # a training forward before a selection step; the first call (micro-batch) only
            if not self._recording or not torch.is_grad_enabled() or weight in self._grams:
                return
            x = inputs[0].detach()
            if isinstance(module, nn.Linear):
                rows = x.reshape(-1, x.shape[-1]).float()
            else:  # unfolded patches: (B·L, C·kh·kw), the conv's own input matrix
                patches = F.unfold(x.float(), module.kernel_size, module.dilation,
                                   module.padding, module.stride)
                rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
            self.record_input_gram(weight, rows.T @ rows)
        return hook

    def record_input_gram(self, weight: torch.Tensor, gram: torch.Tensor) -> None:
        """AᵀA of `weight`'s input for the coming selection step (what the hooks record; for
        layers no hook reaches, and for benchmarks)."""
        cols = as_matrix(weight).shape[1]
        require(tuple(gram.shape) == (cols, cols), "gram", tuple(gram.shape),
                f"({cols}, {cols}), the Gram of the input of a weight of shape "
                f"{tuple(weight.shape)}")
        self._grams[weight] = gram

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        # attach() may have run before the state existed: record for the step that comes next
        self._recording = self._is_selection_step(self._next_step())

    def _input_gram(self, p) -> torch.Tensor | None:
        gram = self._grams.pop(p, None)
        if gram is not None and dist.is_available() and dist.is_initialized():
            dist.all_reduce(gram)
        return gram

    # ------------------------------------------------------------ choosing p

    def _next_step(self) -> int:
        for group in self.param_groups:
            for p in group["params"]:
                if group["use_matrix"] and "step" in self.state[p]:
                    return self.state[p]["step"] + 1
        return 1

    def _is_selection_step(self, t: int) -> bool:
        """Whether p is chosen before the update of (1-based) step t."""
        group = next((g for g in self.param_groups if g["use_matrix"]), None)
        if group is None or group["fixed_p"] is not None:
            return False
        done = t - 1  # the authors' 0-based loop counter at that step
        return done == group["first_select"] or (done > 0 and done % group["select_every"] == 0)

    def _select_p(self, group, b: Batch) -> None:
        """p for each matrix of the batch that has a recorded Gram (before this step's
        momentum update: the criteria read the buffer as it was)."""
        choose = CRITERIA[group["criterion"]]
        beta = group["beta1"]
        for param, st, g in zip(b.originals, b.states, b.grads):
            gram = self._input_gram(param)
            if gram is None:
                continue
            grad = as_matrix(g).float()
            if not (torch.isfinite(grad).all() and torch.isfinite(gram).all()):
                continue
            mom = as_matrix(st["exp_avg"]).float() / (1.0 - beta ** st["step"])
            chosen = choose(st, grad, mom, gram.float(), beta, group["stat_ema"],
                            group["p_min"], group["p_max"], rank=group["approx_rank"],
                            min_rank=group["approx_min_rank"],
                            nesterov=group["select_nesterov"])
            st["p" if group["apply_selected_p"] else "p_observed"] = chosen

    # ------------------------------------------------------------ the update

    def _powered(self, group, matrices: list[torch.Tensor], ps: list[float]):
        """U·Σ^(1/p)·Vᵀ of each 2-D matrix, in fp32: exact, or the authors' map batched by
        shape (a matrix and its transpose together)."""
        if group["exact"]:
            return [schatten_power(x, p) for x, p in zip(matrices, ps)]
        dtype = ns_dtype_for(matrices[0].device, group["ns_dtype"])
        normalize = group["moment_type"] == "none"
        out: list = [None] * len(matrices)
        batches: dict = {}
        for i, x in enumerate(matrices):
            batches.setdefault(tuple(sorted(x.shape)), []).append(i)
        for index in batches.values():
            wide = [matrices[i].mT if matrices[i].size(0) > matrices[i].size(1)
                    else matrices[i] for i in index]
            p_max = group["p_max"] if len(index) == 1 else AUTHORS_BATCH_P_MAX
            powered = schatten_power_authors(torch.stack(wide), [ps[i] for i in index],
                                             POLAR_ABOVE / p_max, normalize, dtype)
            for i, y in zip(index, powered):
                out[i] = y.mT if matrices[i].size(0) > matrices[i].size(1) else y
        return out

    def _target_norm(self, group, shape, p: float) -> float:
        """The Frobenius norm the update is pinned to (see the module docstring)."""
        rows, cols = shape
        muon_norm = math.sqrt(min(rows, cols))
        aux = next((g for g in self.param_groups if not g["use_matrix"]), None)
        if (group["pin"] == "muon" or group["moment_type"] == "none" or aux is None
                or group["lr"] <= 0.0):
            return muon_norm
        beta1_aux = aux["betas"][0]
        rho_aux = (math.sqrt((1.0 - beta1_aux) / (1.0 + beta1_aux))
                   if group["kappa_regime"] == "noisy" else 1.0)
        kappa = max(aux["lr"] * rho_aux * math.sqrt(max(rows, cols)) / group["lr"], 1e-12)
        return muon_norm * kappa ** (1.0 / max(p, 1.0))

    def _matrix_step(self, group) -> None:
        precond = group["moment_type"] != "none"
        b = Batch(self, group, buffers=("exp_avg", "exp_avg_sq") if precond else ("exp_avg",))
        if not len(b):
            return
        beta1, beta2 = group["beta1"], group["beta2"]
        for st in b.states:
            st.setdefault("p", group["fixed_p"] if group["fixed_p"] is not None
                          else group["p_max"])
        if self._is_selection_step(b.states[0]["step"]):
            self._select_p(group, b)
        ps = [st["p"] for st in b.states]
        directions, scales = [], []
        for st, g in zip(b.states, b.grads):
            m = st["exp_avg"].lerp_(g, 1.0 - beta1)
            directions.append((m / (1.0 - beta1 ** st["step"])).lerp(g, 1.0 - beta1))
        inputs = directions
        if precond:
            for st, g, p in zip(b.states, b.grads, ps):
                v = st["exp_avg_sq"].lerp_(g * g, 1.0 - beta2)
                e = -0.25 if group["moment_type"] == "adam" else -1.0 / (2.0 * (p + 1.0))
                scales.append((v / (1.0 - beta2 ** st["step"])).add_(group["eps"]).pow_(e))
            inputs = [d * n for d, n in zip(scales, directions)]
        # the authors skip a matrix whose g̃ is (numerically) zero; a 0/1 weight per matrix
        # does the same without a trip to the host
        keep = [(norm >= SKIP_BELOW).to(norm.dtype) for norm in torch._foreach_norm(inputs)]
        powered = self._powered(group, [as_matrix(x) for x in inputs], ps)
        updates = []
        for i, (n, o, p) in enumerate(zip(directions, powered, ps)):
            o = o.reshape(n.shape).to(n.dtype)
            if precond:
                o = scales[i] * o
            if group["pin"] == "none":
                factor = keep[i] * muon_scale(n.shape)
            else:
                target = self._target_norm(group, as_matrix(n).shape, p)
                factor = keep[i] * target / (o.norm() + 1e-8)
            updates.append(o.mul_(factor))  # o is the map's own output: scaled in place
        self._grams.clear()
        self._recording = self._is_selection_step(b.states[0]["step"] + 1)
        if group["weight_decay"]:
            decay = [1.0 - group["lr"] * group["weight_decay"] * k for k in keep]
            torch._foreach_mul_(b.params, decay)
        torch._foreach_add_(b.params, updates, alpha=-group["lr"])
        b.commit()

    def log_values(self) -> dict[str, float]:
        """The chosen p per layer, as `p/<layer>` (optim.hooks)."""
        return {f"p/{name}": p for name, p in self.p_per_layer().items()}

    def p_per_layer(self) -> dict[str, float]:
        """The p each matrix uses now, by parameter name where attach() knows it; with
        `apply_selected_p=False`, the p last chosen (and not used)."""
        out = {}
        for group in self.param_groups:
            if not group["use_matrix"]:
                continue
            key = "p" if group["apply_selected_p"] else "p_observed"
            for i, p in enumerate(group["params"]):
                if key in self.state[p]:
                    out[self._names.get(p, f"matrix{i}")] = self.state[p][key]
        return out
