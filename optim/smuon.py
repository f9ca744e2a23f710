"""SMuon: steepest descent in a Schatten-(p+1) geometry with a per-layer p chosen from data
(Massena et al. 2026; arXiv:2605.19781).

    m ← lerp(m, g, 1−β1);  m̂ = m/(1−β1^t);  n = lerp(m̂, g, 1−β1)
    moment_type none:   O = U_n Σ_n^(1/p) V_nᵀ, Frobenius norm pinned to Muon's (√min(rows, cols))
    moment_type adam:   D = (v̂ + ε)^(−1/4);        O = D ⊙ powered(D ⊙ n), pinned as below
    moment_type padam:  D = (v̂ + ε)^(−1/(2(p+1))); O = D ⊙ powered(D ⊙ n), pinned as below
    θ ← θ·(1 − lr·λ) − lr·O
Norm pinning (`pin`), as the authors' code: the update's Frobenius norm is set to a target that
does not depend on the gradient's spectrum, so one lr transfers across p.
    kappa (default): adam/padam → √min(rows, cols)·κ^(1/p), with
                     κ = (lr_aux·ρ_aux) / (lr / √max(rows, cols)),
                     ρ_aux = sqrt((1−β1_aux)/(1+β1_aux)) (`kappa_regime: noisy`) or 1 (`determ`):
                     Muon's step at p=∞, the aux Adam's per-coordinate step at p=1;
                     none → √min(rows, cols) (no Adam end to move towards).
    muon:            √min(rows, cols) for every type (the authors' kappa_pin=False).
    none:            adam/padam unpinned, D ⊙ powered(D ⊙ n)·sqrt(max(1, rows/cols)) (an option
                     of ours, not the authors').
No rows/cols factor on a pinned update: √max(rows, cols) in κ already carries the size scaling.
Special cases: none, p=1 → normalized momentum SGD; none, p=∞ → Muon's direction (exact polar;
tall matrices without Muon's rows/cols factor);
padam, p=1 → Adam's n/sqrt(v̂ + ε) up to the pin; adam, p=∞ → MuAdam's D ⊙ polar(D ⊙ n) up to
the pin.

Choosing p, per layer, at step `first_select` and every `select_every` steps (unless `fixed_p`):
with m̂ = Σ σ_i u_i v_iᵀ, the raw gradient G and the layer's input Gram A·Aᵀ,
    C_i = u_iᵀ G v_i,  B_i = v_iᵀ (A·Aᵀ) v_i   (both EMA-smoothed with `stat_ema`)
    tightness:       J(p) = (Σ C_i σ_i^(1/p))² / Σ B_i σ_i^(2/p)
    exact_momentum:  J(p) = (Σ C_i σ_i^(1/p))² / (‖A‖²_{S_k} · ‖σ^(1/p)‖²_{ℓ_{p+1}}),
                     k = 2(p+1)/(p−1)
and p = argmax J on [p_min, p_max], for all same-shape layers at once on the device
(optim/p_selection.py: a grid, then golden-section search; `approx_*` criteria from a top-k SVD
and a bounded tail). N is the step's direction n (Nesterov, as the authors' code); C and B, and
for exact_momentum the Gram's eigenvalues, are EMA-smoothed with `stat_ema` (the authors'
sv_momentum). Input Grams come from forward hooks that `attach(model)` installs; they record
only before selection steps and are summed over data-parallel ranks. A matrix with no hooked
module uses A·Aᵀ = I.

The map Σ ↦ Σ^(1/p) is matmul-only by default (optim/spectral.py `schatten_power_fast`: polar
factor by Newton–Schulz, then the authors' binomial series), batched over same-shape matrices;
`exact=True` takes the fp64 eigendecomposition instead.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from optim._common import Batch, check_beta, check_lr_wd, muon_scale, require
from optim.matrix import MatrixOptimizer
from optim.p_selection import CRITERIA, Spectrum, fit_tail, maximize
from optim.spectral import as_matrix, batched, ns_dtype_for, schatten_power, schatten_power_fast

MOMENT_TYPES = ("none", "adam", "padam")
PINS = ("kappa", "muon", "none")
KAPPA_REGIMES = ("noisy", "determ")


class SMuon(MatrixOptimizer):
    def __init__(self, params, lr: float = 0.02, beta1: float = 0.95, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, moment_type: str = "none",
                 criterion: str = "exact_momentum", p_min: float = 1.02, p_max: float = 10.0,
                 select_every: int = 100, first_select: int = 10, stat_ema: float = 0.95,
                 fixed_p: float | None = None, exact: bool = False, approx_rank: float = 0.1,
                 approx_min_rank: int = 50, ns_dtype: str = "auto", pin: str = "kappa",
                 kappa_regime: str = "noisy", aux_lr=None,
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
        require(0.0 <= stat_ema < 1.0, "stat_ema", stat_ema, "in [0, 1)")
        require(0.0 < approx_rank <= 1.0, "approx_rank", approx_rank, "in (0, 1]")
        require(isinstance(approx_min_rank, int) and approx_min_rank >= 1, "approx_min_rank",
                approx_min_rank, "a positive integer")
        require(ns_dtype in ("auto", "bf16", "fp32"), "ns_dtype", ns_dtype,
                "one of ['auto', 'bf16', 'fp32']")
        defaults = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps,
                    "weight_decay": weight_decay, "moment_type": moment_type,
                    "criterion": criterion, "p_min": p_min, "p_max": p_max,
                    "select_every": select_every, "first_select": first_select,
                    "stat_ema": stat_ema, "fixed_p": fixed_p, "exact": exact,
                    "approx_rank": approx_rank, "approx_min_rank": approx_min_rank,
                    "ns_dtype": ns_dtype, "pin": pin, "kappa_regime": kappa_regime}
        super().__init__(params, defaults, {"aux_lr": aux_lr, "aux_betas": aux_betas,
                                            "aux_eps": aux_eps,
                                            "aux_weight_decay": aux_weight_decay})
        self._grams: dict[torch.Tensor, list] = {}  # param → [Σ xᵀx, rows]
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
            if not self._recording:
                return
            x = inputs[0].detach()
            if isinstance(module, nn.Linear):
                rows = x.reshape(-1, x.shape[-1]).float()
            else:  # unfolded patches: (B·L, C·kh·kw), the conv's own input matrix
                patches = F.unfold(x.float(), module.kernel_size, module.dilation,
                                   module.padding, module.stride)
                rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
            gram, count = self._grams.get(weight, [0.0, 0])
            self._grams[weight] = [gram + rows.T @ rows, count + rows.shape[0]]
        return hook

    def _input_gram(self, p) -> torch.Tensor | None:
        if p not in self._grams:
            return None
        gram, count = self._grams.pop(p)
        if dist.is_available() and dist.is_initialized():
            count_t = torch.tensor(float(count), device=gram.device)
            dist.all_reduce(gram)
            dist.all_reduce(count_t)
            count = count_t.item()
        return gram / max(count, 1)

    # ------------------------------------------------------------ choosing p

    def _next_step(self) -> int:
        for group in self.param_groups:
            for p in group["params"]:
                if group["use_matrix"] and "step" in self.state[p]:
                    return self.state[p]["step"] + 1
        return 1

    def _is_selection_step(self, t: int) -> bool:
        group = next(g for g in self.param_groups if g["use_matrix"]) if any(
            g["use_matrix"] for g in self.param_groups) else None
        if group is None or group["fixed_p"] is not None:
            return False
        return t == group["first_select"] or t % group["select_every"] == 0

    def _spectra(self, group, directions, grads, grams, states) -> Spectrum:
        """The statistics the criterion needs, for a batch of same-shape layers (float64), with
        C, B and the Gram's eigenvalues EMA-smoothed in each layer's state."""
        n = torch.stack([as_matrix(d).float() for d in directions])
        g = torch.stack([as_matrix(x).float() for x in grads])
        cols = n.shape[-1]
        gram = torch.stack([a if a is not None else torch.eye(cols, device=n.device)
                            for a in grams])
        min_dim = min(n.shape[-2:])
        approx = group["criterion"].startswith("approx")
        if approx:
            k = min(min_dim, max(group["approx_min_rank"], int(group["approx_rank"] * min_dim)))
            u, sigma, v = torch.svd_lowrank(n, q=min(k + 20, min_dim), niter=4)
            u, sigma, v = u[..., :k], sigma[..., :k], v[..., :k]
        else:
            u, sigma, vh = torch.linalg.svd(n, full_matrices=False)
            v = vh.mT
        C = torch.einsum("bmi,bmn,bni->bi", u, g, v)
        B = torch.einsum("bni,bnk,bki->bi", v, gram, v)
        eigs = torch.linalg.eigvalsh(gram) if "momentum" in group["criterion"] else \
            torch.ones_like(gram[..., 0])
        ema = group["stat_ema"]
        for i, st in enumerate(states):
            for key, value in (("C_ema", C[i]), ("B_ema", B[i]), ("gram_eigs_ema", eigs[i])):
                if key in st and st[key].shape == value.shape:
                    st[key].lerp_(value, 1.0 - ema)
                else:
                    st[key] = value.clone()
        stacked = {key: torch.stack([st[key] for st in states]).double()
                   for key in ("C_ema", "B_ema", "gram_eigs_ema")}
        top = sigma.double().amax(-1, keepdim=True).clamp(min=1e-30)
        spec = Spectrum(sigma.double() / top, stacked["C_ema"], stacked["B_ema"],
                        stacked["gram_eigs_ema"])
        if approx and sigma.shape[-1] < min_dim:
            nd = n.double()
            total_N = (g.double() * nd).sum((-2, -1)) / top.squeeze(-1)
            total_D = torch.einsum("bmn,bnk,bmk->b", nd, gram.double(), nd) / top.squeeze(-1)**2
            spec.tail_ranks, spec.tail_scale, spec.tail_alpha = fit_tail(spec.sigma, min_dim)
            spec.tail_N = total_N - (spec.C * spec.sigma).sum(-1)
            spec.tail_D = (total_D - (spec.B * spec.sigma**2).sum(-1)).clamp(min=0.0)
        return spec

    def _select_p(self, group, params, states, directions, grads) -> None:
        """Choose p for every matrix of the group, one batch per shape; one transfer of all the
        chosen values to the host."""
        criterion = CRITERIA[group["criterion"]]
        grams = [self._input_gram(param) for param in params]
        chosen = {}
        shapes: dict = {}
        for i, d in enumerate(directions):
            shapes.setdefault(tuple(as_matrix(d).shape), []).append(i)
        for index in shapes.values():
            spec = self._spectra(group, [directions[i] for i in index],
                                 [grads[i] for i in index], [grams[i] for i in index],
                                 [states[i] for i in index])
            p = maximize(lambda ps, spec=spec: criterion(spec, ps), len(index),
                         group["p_min"], group["p_max"], device=spec.sigma.device)
            chosen.update(zip(index, p))
        values = torch.stack([chosen[i] for i in range(len(directions))]).tolist()
        for st, p in zip(states, values):
            st["p"] = p

    # ------------------------------------------------------------ the update

    def _powered(self, group, matrices: list[torch.Tensor], ps: list[float]):
        """U·Σ^(1/p)·Vᵀ of each 2-D matrix, in fp32: exact, or batched by shape, matmuls only."""
        if group["exact"]:
            return [schatten_power(x, p) for x, p in zip(matrices, ps)]
        dtype = ns_dtype_for(matrices[0].device, group["ns_dtype"])
        return batched(lambda xs, p: schatten_power_fast(xs, p, dtype), matrices, ps)

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
        selecting = self._is_selection_step(b.states[0]["step"])
        directions, scales = [], []
        for st, g in zip(b.states, b.grads):
            t = st["step"]
            st.setdefault("p", group["fixed_p"] if group["fixed_p"] is not None
                          else group["p_max"])
            m = st["exp_avg"].lerp_(g, 1.0 - beta1)
            directions.append((m / (1.0 - beta1**t)).lerp(g, 1.0 - beta1))
        if selecting:
            self._select_p(group, b.originals, b.states, directions, b.grads)
        ps = [st["p"] for st in b.states]
        inputs = directions
        if precond:
            for st, g, p in zip(b.states, b.grads, ps):
                v = st["exp_avg_sq"].lerp_(g * g, 1.0 - beta2)
                e = -0.25 if group["moment_type"] == "adam" else -1.0 / (2.0 * (p + 1.0))
                scales.append((v / (1.0 - beta2 ** st["step"])).add_(group["eps"]).pow_(e))
            inputs = [d * n for d, n in zip(scales, directions)]
        powered = self._powered(group, [as_matrix(x) for x in inputs], ps)
        updates = []
        for i, (n, o, p) in enumerate(zip(directions, powered, ps)):
            o = o.view_as(n).to(n.dtype)
            if precond:
                o = scales[i] * o
            if group["pin"] == "none":
                o = o * muon_scale(n.shape)
            else:
                target = self._target_norm(group, as_matrix(n).shape, p)
                o = o * (target / o.norm().clamp(min=1e-30))
            updates.append(o)
        self._grams.clear()
        self._recording = self._is_selection_step(b.states[0]["step"] + 1)
        b.decay(group["lr"], group["weight_decay"])
        torch._foreach_add_(b.params, updates, alpha=-group["lr"])
        b.commit()

    def log_values(self) -> dict[str, float]:
        """The chosen p per layer, as `p/<layer>` (optim.hooks)."""
        return {f"p/{name}": p for name, p in self.p_per_layer().items()}

    def p_per_layer(self) -> dict[str, float]:
        """The p each matrix uses now, by parameter name where attach() knows it."""
        out = {}
        for group in self.param_groups:
            if not group["use_matrix"]:
                continue
            for i, p in enumerate(group["params"]):
                if "p" in self.state[p]:
                    out[self._names.get(p, f"matrix{i}")] = self.state[p]["p"]
        return out
