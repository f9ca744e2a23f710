"""SMuon: steepest descent in a Schatten-(p+1) geometry with a per-layer p chosen from data
(Massena et al. 2026; arXiv:2605.19781).

    m ← lerp(m, g, 1−β1);  m̂ = m/(1−β1^t);  n = lerp(m̂, g, 1−β1)
    moment_type none:   O = U_n Σ_n^(1/p) V_nᵀ, Frobenius norm pinned to Muon's (√min(rows, cols))
    moment_type adam:   D = (v̂ + ε)^(−1/4);        O = D ⊙ powered(D ⊙ n)
    moment_type padam:  D = (v̂ + ε)^(−1/(2(p+1))); O = D ⊙ powered(D ⊙ n)
    θ ← θ·(1 − lr·λ) − lr·O·sqrt(max(1, rows/cols))
Special cases: none, p=1 → normalized momentum SGD; none, p=∞ → Muon (exact polar);
padam, p=1 → Adam's n/sqrt(v̂ + ε); adam, p=∞ → MuAdam's D ⊙ polar(D ⊙ n).
[recon] Norm pinning for `none` is the Frobenius rule above; the preconditioned types need none
(padam's D already moves from Adam's scale at p=1 to Muon's at p=∞).

Choosing p, per layer, at step `first_select` and every `select_every` steps (unless `fixed_p`):
with m̂ = Σ σ_i u_i v_iᵀ, the raw gradient G and the layer's input Gram A·Aᵀ,
    C_i = u_iᵀ G v_i,  B_i = v_iᵀ (A·Aᵀ) v_i   (both EMA-smoothed with `stat_ema`)
    tightness:       J(p) = (Σ C_i σ_i^(1/p))² / Σ B_i σ_i^(2/p)
    exact_momentum:  J(p) = (Σ C_i σ_i^(1/p))² / (‖A‖²_{S_k} · ‖σ^(1/p)‖²_{ℓ_{p+1}}),
                     k = 2(p+1)/(p−1)
and p = argmax J on [p_min, p_max] by bounded Brent search (scipy). Input Grams come from forward
hooks that `attach(model)` installs; they record only before selection steps and are summed
over data-parallel ranks. A matrix with no hooked module uses A·Aᵀ = I.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from optim._common import Batch, check_beta, check_lr_wd, muon_scale, require
from optim.matrix import MatrixOptimizer
from optim.spectral import as_matrix, schatten_power

MOMENT_TYPES = ("none", "adam", "padam")
CRITERIA = ("tightness", "exact_momentum")


def tightness(p: float, C, sigma, B) -> float:
    s = sigma ** (1.0 / p)
    return float((C * s).sum() ** 2 / (B * s * s).sum().clamp(min=1e-300))


def exact_momentum(p: float, C, sigma, gram_eigs) -> float:
    s = sigma ** (1.0 / p)
    k = 2.0 * (p + 1.0) / (p - 1.0)
    a = gram_eigs.clamp(min=0).sqrt()
    a = a / a.max().clamp(min=1e-300)  # J's argmax is unchanged by scaling A
    schatten_k = (a ** k).sum() ** (1.0 / k)
    lp = (s ** (p + 1.0)).sum() ** (1.0 / (p + 1.0))
    return float((C * s).sum() ** 2 / (schatten_k**2 * lp**2).clamp(min=1e-300))


class SMuon(MatrixOptimizer):
    def __init__(self, params, lr: float = 0.02, beta1: float = 0.95, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, moment_type: str = "none",
                 criterion: str = "tightness", p_min: float = 1.02, p_max: float = 10.0,
                 select_every: int = 100, first_select: int = 10, stat_ema: float = 0.95,
                 fixed_p: float | None = None, aux_lr=None, aux_betas=None, aux_eps=None,
                 aux_weight_decay=None):
        check_lr_wd(lr, weight_decay)
        check_beta("beta1", beta1)
        check_beta("beta2", beta2)
        require(eps > 0, "eps", eps, "> 0")
        require(moment_type in MOMENT_TYPES, "moment_type", moment_type,
                f"one of {list(MOMENT_TYPES)}")
        require(criterion in CRITERIA, "criterion", criterion, f"one of {list(CRITERIA)}")
        require(1.0 <= p_min < p_max, "p_min", p_min, f"in [1, p_max={p_max})")
        require(fixed_p is None or fixed_p >= 1.0, "fixed_p", fixed_p, "None or >= 1 (inf ok)")
        require(isinstance(select_every, int) and select_every > 0, "select_every",
                select_every, "a positive integer")
        require(0.0 <= stat_ema < 1.0, "stat_ema", stat_ema, "in [0, 1)")
        defaults = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps,
                    "weight_decay": weight_decay, "moment_type": moment_type,
                    "criterion": criterion, "p_min": p_min, "p_max": p_max,
                    "select_every": select_every, "first_select": first_select,
                    "stat_ema": stat_ema, "fixed_p": fixed_p}
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

    def _select_p(self, group, st, m_hat, grad, gram) -> float:
        u, sigma, vh = torch.linalg.svd(as_matrix(m_hat).float(), full_matrices=False)
        sigma = sigma / sigma.max().clamp(min=1e-30)
        C = torch.einsum("ij,jk,ki->i", u.T, as_matrix(grad).float(), vh.T)
        if gram is None:
            B = torch.ones_like(C)
            gram_eigs = torch.ones(vh.shape[1], device=C.device)
        else:
            B = torch.einsum("ij,jk,ik->i", vh, gram, vh)
            gram_eigs = torch.linalg.eigvalsh(gram)
        ema = group["stat_ema"]
        if "C_ema" in st and st["C_ema"].shape == C.shape:
            st["C_ema"].lerp_(C, 1.0 - ema)
            st["B_ema"].lerp_(B, 1.0 - ema)
        else:
            st["C_ema"], st["B_ema"] = C.clone(), B.clone()
        C, B = st["C_ema"].double().cpu(), st["B_ema"].double().cpu()
        sigma = sigma.double().cpu()
        if group["criterion"] == "tightness":
            objective = lambda p: -tightness(p, C, sigma, B)  # noqa: E731
        else:
            eigs = gram_eigs.double().cpu()
            objective = lambda p: -exact_momentum(p, C, sigma, eigs)  # noqa: E731
        from scipy.optimize import minimize_scalar  # on first use: ~0.5 s off every launch

        result = minimize_scalar(objective, bounds=(group["p_min"], group["p_max"]),
                                 method="bounded", options={"xatol": 1e-3})
        return float(result.x)

    # ------------------------------------------------------------ the update

    def _matrix_step(self, group) -> None:
        precond = group["moment_type"] != "none"
        b = Batch(self, group, buffers=("exp_avg", "exp_avg_sq") if precond else ("exp_avg",))
        if not len(b):
            return
        beta1, beta2 = group["beta1"], group["beta2"]
        selecting = self._is_selection_step(b.states[0]["step"])
        updates = []
        for param, st, g in zip(b.originals, b.states, b.grads):
            t = st["step"]
            st.setdefault("p", group["fixed_p"] if group["fixed_p"] is not None
                          else group["p_max"])
            m = st["exp_avg"].lerp_(g, 1.0 - beta1)
            m_hat = m / (1.0 - beta1**t)
            if selecting:
                st["p"] = self._select_p(group, st, m_hat, g, self._input_gram(param))
            p = st["p"]
            n = m_hat.lerp(g, 1.0 - beta1)
            if precond:
                v = st["exp_avg_sq"].lerp_(g * g, 1.0 - beta2)
                e = -0.25 if group["moment_type"] == "adam" else -1.0 / (2.0 * (p + 1.0))
                d = (v / (1.0 - beta2**t)).add_(group["eps"]).pow_(e)
                o = d * schatten_power(as_matrix(d * n), p).view_as(n)
            else:
                o = schatten_power(as_matrix(n), p).view_as(n)
                o = o * (math.sqrt(min(as_matrix(n).shape)) / o.norm().clamp(min=1e-30))
            updates.append(o * muon_scale(n.shape))
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
