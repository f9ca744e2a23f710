"""SMuon and its tables' Muon as their authors run them (github deel-ai-papers/schatten-muon
@749ba8d): each piece against an independent transcription written here from the authors' code
as read (smuon/p_root.py, smuon/optimizers/adaptive.py and baseline.py, smuon/svs/*,
smuon/wrap_model.py, scripts/nanogpt.py), computed differently (per matrix, explicit powers
instead of Horner, fp64 criteria), so that agreement means the same method.

Mutations these tests kill (each checked by hand when written):
- p chosen from the raw gradient's SVD instead of the look-ahead direction's, C computed from
  the direction instead of the gradient, exact_momentum's Schatten index k = (p+1)/(p−1)
  instead of 2(p+1)/(p−1), and stat_ema inverted (lerp weight stat_ema instead of 1 − stat_ema):
  test_selection_is_the_authors[exact_momentum] (and [tightness] for the first, second, fourth).
"""

import copy
import math

import pytest
import torch
from scipy.optimize import minimize_scalar

import optim
import optim.smuon as smuon_module
from optim.spectral import MUADAM_COEFFICIENTS, schatten_power_authors

F32, F64 = torch.float32, torch.float64


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def matrix(rows, cols, condition=None, seed=0):
    """A random matrix; with `condition`, singular values log-spaced from 1 to 1/condition."""
    g = torch.Generator().manual_seed(seed)
    if condition is None:
        return torch.randn(rows, cols, generator=g)
    r = min(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, r, generator=g, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(cols, r, generator=g, dtype=F64))
    return ((u * torch.logspace(0, -math.log10(condition), r, dtype=F64)) @ v.T).float()


def svd_power(x, p):
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    return (u * (s ** (1.0 / p) if math.isfinite(p) else torch.ones_like(s))) @ vh


# ---------------------------------------------------------------- the map, transcribed


def binom(a: float, j: int) -> float:
    out = 1.0
    for i in range(j):
        out *= (a - i) / (i + 1)
    return out


def pe_polar(w, dtype=F32):
    """Polar Express on a wide matrix, normalized by its Schatten-4 norm; (P, ‖w‖_S4) in fp32.
    In bf16 (the authors' iterations on every device) each operation is theirs, in their
    order, so that bf16 rounding falls the same way."""
    if dtype == F32:
        s4 = torch.linalg.matrix_norm(w @ w.T).sqrt()
        y = w / s4
        for a, b, c in MUADAM_COEFFICIENTS:
            gram = y @ y.T
            y = a * y + b * (gram @ y) + c * (gram @ (gram @ y))
        return y, s4
    y = w.to(dtype)
    for i, (a, b, c) in enumerate(MUADAM_COEFFICIENTS):
        gram = y @ y.T
        if i == 0:
            s_inv = gram.norm().rsqrt()
            y, gram = y * s_inv, gram * s_inv**2
        y = a * y + (b * gram + c * (gram @ gram)) @ y
    return y.float(), 1 / s_inv.float()


def authors_map(x, ps, p_threshold, normalize, dtype=F32):
    """fractional_power_from_polar as schatten_update_batched calls it, one matrix at a time."""
    exps = [1.0 / p if math.isfinite(p) else 0.0 for p in ps]
    if all(a == 1.0 for a in exps):
        return [m for m in x]
    grid = torch.logspace(-3.0, 0.0, 200, dtype=F32)
    order = 5
    for k in range(1, 6):  # the smallest order within 5e-3 for every exponent of the batch
        worst = max((grid**a - sum(binom(a, j) * (grid - 1) ** j for j in range(k + 1)))
                    .abs().max().item() for a in exps)
        if worst <= 5e-3:
            order = k
            break
    out = []
    for m, a in zip(x, exps):
        tall = m.shape[0] > m.shape[1]
        w = m.T if tall else m
        p0, s4 = pe_polar(w, dtype)
        if all(e <= p_threshold for e in exps):
            res = p0
        else:
            P = 1.5 * p0 - 0.5 * (p0 @ p0.T) @ p0
            M = (w / s4) @ P.T
            E = (M + M.T) / 2 + (1e-4 - 1.0) * torch.eye(w.shape[0])
            S, power = torch.zeros_like(E), torch.eye(w.shape[0])
            for j in range(1, order + 1):
                power = power @ E
                S = S + binom(a, j) * power
            res = P + S @ P if normalize else s4**a * (P + S @ P)
            res = P if a <= p_threshold else res
        out.append(res.T if tall else res)
    return out


SHAPES = [(40, 64), (64, 40), (48, 48)]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=["wide", "tall", "square"])
@pytest.mark.parametrize("condition", [None, 10, 100])
def test_the_default_map_is_the_authors_to_rounding(shape, condition, dtype):
    """fp32 iterations (our CPU default) against the fp32 transcription; bf16 iterations (the
    accelerator default, and the authors' on every device) against theirs, op for op."""
    x = torch.stack([matrix(*shape, condition, seed=s) for s in range(3)])
    threshold = 1.01 / 10
    for ps in ([1.02, 1.02, 1.02], [1.5, 3.0, 6.0], [2.0, 9.8, 10.0], [9.95, 10.0, math.inf],
               [1.0, 1.0, 1.0], [1.0, 4.0, 50.0]):
        for normalize in (False, True):
            got = schatten_power_authors(x, ps, threshold, normalize, dtype)
            want = authors_map(x, ps, threshold, normalize, dtype)
            for i in range(3):
                assert rel(got[i].float(), want[i]) < (2e-5 if dtype == F32 else 1e-3), \
                    (ps, normalize, i)


@pytest.mark.parametrize("condition", [10, 100])
def test_the_exact_map_is_within_1e_2_of_an_fp64_svd(condition):
    for shape in SHAPES:
        x = matrix(*shape, condition)
        for p in (1.02, 1.5, 3.0, 9.9, 10.0, 50.0, math.inf):
            w = torch.nn.Parameter(torch.zeros(shape))
            opt = optim.SMuon([w], lr=1.0, fixed_p=p, exact=True)
            w.grad = x.clone()
            opt.step()
            want = svd_power(x, p)
            want = want * math.sqrt(min(shape)) / want.norm()
            assert rel(-w.detach(), want) < 1e-2 * 1e-3, (shape, p)


# ---------------------------------------------------------------- the step, transcribed


class AuthorsStep:
    """SingleDeviceSMuonWithAuxAdam._step_muon for fixed p, all matrices of one group, with
    the batching of the distributed class (same (min, max) shape → one batch; pmax stays 10
    in a batch)."""

    def __init__(self, params, lr, beta1, beta2, eps, wd, moment_type, p, p_max, aux):
        self.params, self.lr, self.b1, self.b2, self.eps, self.wd = params, lr, beta1, beta2, \
            eps, wd
        self.moment_type, self.p, self.p_max, self.aux = moment_type, p, p_max, aux
        self.m = [torch.zeros_like(w) for w in params]
        self.v = [torch.zeros_like(w) for w in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        t, items = self.t, {}
        for i, (g, m, v) in enumerate(zip(grads, self.m, self.v)):
            m.mul_(self.b1).add_((1 - self.b1) * g)
            n = m / (1 - self.b1**t) * self.b1 + (1 - self.b1) * g
            D = None
            if self.moment_type != "none":
                v.mul_(self.b2).add_((1 - self.b2) * g * g)
                e = -0.25 if self.moment_type == "adam" else -1 / (2 * (self.p + 1))
                D = (v / (1 - self.b2**t) + self.eps) ** e
            gt = n if D is None else D * n
            if gt.norm() < 1e-8:
                continue
            items.setdefault(tuple(sorted(g.shape)), []).append((i, gt, D))
        for batch in items.values():
            p_max = self.p_max if len(batch) == 1 else 10.0
            outs = authors_map([gt for _, gt, _ in batch], [self.p] * len(batch),
                               1.01 / p_max, self.moment_type == "none")
            for (i, _, D), o in zip(batch, outs):
                if D is not None:
                    o = D * o
                rows, cols = o.shape
                target = math.sqrt(min(rows, cols))
                if self.moment_type != "none":
                    lr_aux, b1_aux = self.aux
                    kappa = lr_aux * math.sqrt((1 - b1_aux) / (1 + b1_aux)) / (
                        self.lr / math.sqrt(max(rows, cols)))
                    target *= kappa ** (1 / max(self.p, 1.0))
                o = o * target / (o.norm() + 1e-8)
                w = self.params[i]
                if self.wd > 0:
                    w.mul_(1 - self.lr * self.wd)
                w.add_(o, alpha=-self.lr)


@pytest.mark.parametrize("p, p_max", [(3.0, 10.0), (10.0, 10.0), (20.0, 50.0)])
@pytest.mark.parametrize("moment_type", ["none", "adam", "padam"])
def test_the_step_is_the_authors(moment_type, p, p_max):
    """Two same-shape matrices and a transpose (one batch), a lone shape, and a matrix whose
    gradient is zero (left alone, no decay); at p = 20 with p_max = 50 the lone matrix takes
    the series and the batch the polar factor (their batched call keeps pmax at 10)."""
    torch.manual_seed(0)
    shapes = [(24, 40), (24, 40), (40, 24), (16, 12), (8, 8)]
    w0 = [torch.randn(s) for s in shapes]
    ws = [torch.nn.Parameter(w.clone()) for w in w0]
    bias = torch.nn.Parameter(torch.zeros(3))
    lr, wd, aux = 0.05, 0.1, (2e-3, 0.8)
    opt = optim.SMuon([{"params": ws, "use_matrix": True},
                       {"params": [bias], "use_matrix": False}], lr=lr, weight_decay=wd,
                      moment_type=moment_type, fixed_p=p, p_max=p_max, eps=1e-8,
                      aux_lr=aux[0], aux_betas=(aux[1], 0.95))
    ref_w = [w.clone() for w in w0]
    ref = AuthorsStep(ref_w, lr, 0.95, 0.999, 1e-8, wd, moment_type, p, p_max, aux)
    for _ in range(6):
        grads = [torch.randn(s) for s in shapes[:-1]] + [torch.zeros(shapes[-1])]
        for w, g in zip(ws, grads):
            w.grad = g.clone()
        bias.grad = torch.zeros(3)
        opt.step()
        ref.step(grads)
    for got, want, start in zip(ws[:-1], ref_w, w0):
        assert rel(got.detach() - start, want - start) < 1e-4
    assert torch.equal(ws[-1].detach(), w0[-1])  # zero gradient: no step, no decay


def test_muon_pe_is_the_authors_baseline():
    """baseline.py MuonWithAuxAdam: bias-corrected Nesterov, Polar Express on n/(‖n‖_F + 1e-7),
    Muon's sqrt(max(1, rows/cols)), decoupled decay."""
    torch.manual_seed(1)
    shapes = [(24, 40), (40, 24)]
    w0 = [torch.randn(s) for s in shapes]
    ws = [torch.nn.Parameter(w.clone()) for w in w0]
    lr, beta, wd = 0.02, 0.9, 0.1
    opt = optim.MuonPE(ws, lr=lr, momentum=beta, weight_decay=wd)
    ref = [w.clone() for w in w0]
    ms = [torch.zeros(s) for s in shapes]
    for t in range(1, 7):
        for i, s in enumerate(shapes):
            g = torch.randn(s)
            ws[i].grad = g.clone()
            ms[i] = beta * ms[i] + (1 - beta) * g
            n = ms[i] / (1 - beta**t) * beta + (1 - beta) * g
            w = n.T if s[0] > s[1] else n
            y = w / (w.norm() + 1e-7)
            for a, b, c in MUADAM_COEFFICIENTS:
                gram = y @ y.T
                y = a * y + b * (gram @ y) + c * (gram @ (gram @ y))
            o = (y.T if s[0] > s[1] else y) * math.sqrt(max(1, s[0] / s[1]))
            ref[i] = ref[i] * (1 - lr * wd) - lr * o
        opt.step()
    for got, want, start in zip(ws, ref, w0):
        assert rel(got.detach() - start, want - start) < 1e-4
    assert optim.BY_NAME["muon_pe"].cls is optim.MuonPE


# ---------------------------------------------------------------- choosing p, transcribed


def ref_exact_momentum(st, G, mom, gram, beta, keep, lo, hi):
    M = (mom * beta + (1 - beta) * G) * beta + (1 - beta) * G  # the Nesterov look-ahead
    u, s, vh = torch.linalg.svd(M.double(), full_matrices=False)
    C = (u * (G.double() @ vh.T)).sum(0)
    s_a = torch.linalg.eigvalsh(gram.double()).clamp(min=0).sqrt().flip(0)
    for key, value in (("C", C), ("s_a", s_a)):
        st[key] = value if key not in st else keep * st[key] + (1 - keep) * value
    C, s_a = st["C"], st["s_a"]

    def neg_j(p):
        k = 2 * (p + 1) / (p - 1)
        norm_a = (s_a**k).sum() ** (1 / k)
        lp = (s ** ((p + 1) / p)).sum() ** (2 / (p + 1))
        return -((C * s ** (1 / p)).sum() ** 2 / (norm_a**2 * lp)).item()

    return minimize_scalar(neg_j, bounds=(lo, hi), method="bounded").x


def ref_tightness(st, G, mom, gram, beta, keep, lo, hi, nesterov=True):
    M = mom * beta + (1 - beta) * G
    if nesterov:
        M = M * beta + (1 - beta) * G
    u, s, vh = torch.linalg.svd(M.double(), full_matrices=False)
    C = (u * (G.double() @ vh.T)).sum(0)
    B = torch.stack([v @ gram.double() @ v for v in vh]).clamp(min=0)
    for key, value in (("C", C), ("B", B)):
        st[key] = value if key not in st else keep * st[key] + (1 - keep) * value

    def neg_j(p):
        return -((st["C"] * s ** (1 / p)).sum() ** 2 / (st["B"] * s ** (2 / p)).sum()).item()

    return minimize_scalar(neg_j, bounds=(lo, hi), method="bounded").x


REFERENCES = {"exact_momentum": ref_exact_momentum, "tightness": ref_tightness}


@pytest.mark.parametrize("criterion", sorted(REFERENCES))
def test_selection_is_the_authors(criterion):
    """A linear layer trained by SMuon; p chosen before the update of steps 4, 11 and 21
    (first_select 3, select_every 10: the authors' 0-based loop steps 3, 10, 20), from the
    gradient, the buffer before the step bias-corrected with this step's count, and the Gram of
    this step's first training forward, its statistics EMA-smoothed across selections. The
    reference tracks its own momentum and Gram from the inputs it feeds."""
    torch.manual_seed(2)
    layer = torch.nn.Linear(24, 16, bias=False)
    opt = optim.SMuon(layer.parameters(), lr=0.02, first_select=3, select_every=10,
                      stat_ema=0.7, criterion=criterion, p_max=10.0)
    opt.attach(layer)
    target = torch.randn(16, 24) @ torch.diag(torch.logspace(0, -2, 24))
    scale = torch.logspace(0, -1.5, 24)
    beta, m, st, chosen = 0.95, torch.zeros(16, 24), {}, 0
    for t in range(1, 24):
        x = torch.randn(64, 24) * scale
        if t % 5 == 0:  # a late shift in the data: the gradient turns away from the momentum
            x = x.flip(-1)
        with torch.no_grad():  # an evaluation forward: never recorded
            layer(torch.randn(8, 24))
        loss = (layer(x) - x @ target.T).pow(2).mean()
        layer.zero_grad()
        loss.backward()
        layer(torch.randn(64, 24) * 5)  # a second forward in the step: not the Gram either
        G = layer.weight.grad.clone()
        opt.step()
        if t in (4, 11, 21):
            want = REFERENCES[criterion](st, G, m / (1 - beta**t), x.T @ x, beta, 0.7,
                                         1.02, 10.0)
            got = opt.state[layer.weight]["p"]
            assert got == pytest.approx(want, rel=2e-3), (t, got, want)  # fp32 J: flat top
            chosen += 1
        m = beta * m + (1 - beta) * G
    assert chosen == 3


def test_observing_p_as_the_authors_p_star_study_does():
    """experiments/mlp_exact_p.py: exact_tightness p* without the look-ahead (nesterov=False),
    tracked beside an optimizer whose p never changes. With apply_selected_p=False the weights
    follow the fixed-p run exactly and the logged p is the transcribed criterion's."""
    torch.manual_seed(4)
    xs = [torch.randn(64, 24) * torch.logspace(0, -1.5, 24) for _ in range(25)]
    target = torch.randn(16, 24)

    def train(**kw):
        torch.manual_seed(5)
        layer = torch.nn.Linear(24, 16, bias=False)
        opt = optim.SMuon(layer.parameters(), lr=0.02, p_max=50.0, criterion="tightness",
                          stat_ema=0.5, first_select=10, select_every=10, **kw)
        opt.attach(layer)
        m, st, seen = torch.zeros(16, 24), {}, []
        for t, x in enumerate(xs, start=1):
            layer.zero_grad()
            (layer(x) - x @ target.T).pow(2).mean().backward()
            G = layer.weight.grad.clone()
            opt.step()
            if t in (11, 21):
                want = ref_tightness(st, G, m / (1 - 0.95**t), x.T @ x, 0.95, 0.5, 1.02, 50.0,
                                     nesterov=False)
                seen.append((next(iter(opt.p_per_layer().values())), want))
            m = 0.95 * m + 0.05 * G
        return layer.weight.detach(), seen

    observed, seen = train(apply_selected_p=False, select_nesterov=False)
    fixed, _ = train(fixed_p=50.0)
    assert torch.equal(observed, fixed)
    for got, want in seen:
        assert got == pytest.approx(want, rel=5e-3)  # fp32 J against fp64: a flat top
    assert abs(seen[0][0] - 50.0) > 1.0  # the observed p* is not the p in use


def test_selection_steps_and_the_layers_that_keep_p(monkeypatch):
    """With first_select 10 and select_every 100, p is chosen before steps 11, 101 and 201; a
    matrix without a hooked module (no Gram) keeps p_max."""
    seen = []

    def spy(st, grad, mom, gram, *args, **kw):
        seen.append(st["step"])
        return 2.0

    monkeypatch.setitem(smuon_module.CRITERIA, "exact_momentum", spy)
    layer = torch.nn.Linear(6, 4, bias=False)
    loose = torch.nn.Parameter(torch.randn(4, 6))
    opt = optim.SMuon([layer.weight, loose], lr=1e-3)
    opt.attach(layer)
    for _ in range(205):
        layer(torch.randn(3, 6)).sum().backward()
        loose.grad = torch.randn(4, 6)
        opt.step()
        layer.zero_grad()
    assert seen == [11, 101, 201]
    assert opt.state[layer.weight]["p"] == 2.0 and opt.state[loose]["p"] == 10.0


@pytest.mark.parametrize("criterion", ["approx_tightness", "approx_momentum"])
def test_approximate_criteria_at_full_rank_are_the_exact_ones(criterion):
    """No tail to model: approx_tightness is tightness with a fresh C; approx_momentum is
    exact_momentum without the look-ahead (as theirs)."""
    torch.manual_seed(3)
    G, mom = torch.randn(16, 24), torch.randn(16, 24)
    x = torch.randn(80, 24) * torch.logspace(0, -1, 24)
    gram = x.T @ x
    kw = {"rank": 1.0, "min_rank": 1}
    got = smuon_module.CRITERIA[criterion]({}, G, mom, gram, 0.9, 0.0, 1.02, 10.0, **kw)
    if criterion == "approx_tightness":
        want = ref_tightness({}, G, mom, gram, 0.9, 0.0, 1.02, 10.0)
    else:  # M = lerp(m, G, 1−β), no look-ahead
        M = mom * 0.9 + 0.1 * G
        u, s, vh = torch.linalg.svd(M.double(), full_matrices=False)
        C = (u * (G.double() @ vh.T)).sum(0)
        s_a = torch.linalg.eigvalsh(gram.double()).clamp(min=0).sqrt().flip(0)

        def neg_j(p):
            k = 2 * (p + 1) / (p - 1)
            den = ((s_a**k).sum() ** (2 / k)) * (s ** ((p + 1) / p)).sum() ** (2 / (p + 1))
            return -((C * s ** (1 / p)).sum() ** 2 / den).item()

        want = minimize_scalar(neg_j, bounds=(1.02, 10.0), method="bounded").x
    assert got == pytest.approx(want, abs=2e-3)


def test_approximate_criteria_with_a_tail_stay_near_the_exact_ones():
    torch.manual_seed(0)
    sigma = torch.arange(1, 121).float().pow(-0.8)
    u, _ = torch.linalg.qr(torch.randn(120, 120))
    v, _ = torch.linalg.qr(torch.randn(200, 120))
    G = (u * sigma) @ v.T + 0.05 * torch.randn(120, 200)
    x = torch.randn(400, 200) * torch.logspace(0, -1, 200)
    gram = x.T @ x
    exact = smuon_module.CRITERIA["tightness"]({}, G, G, gram, 0.95, 0.0, 1.02, 10.0)
    approx = smuon_module.CRITERIA["approx_tightness"]({}, G, G, gram, 0.95, 0.0, 1.02, 10.0,
                                                      rank=0.25, min_rank=10)
    assert 1.02 <= approx <= 10.0 and approx == pytest.approx(exact, rel=0.3)


def test_a_resume_just_before_a_selection_step_is_exact():
    """attach() runs before load_state_dict() in a resumed run: the Gram of the next step
    must still be recorded, and the statistics' EMAs come back from the state_dict."""

    def fresh():
        torch.manual_seed(0)
        layer = torch.nn.Linear(12, 8, bias=False)
        opt = optim.SMuon(layer.parameters(), lr=0.02, first_select=3, select_every=5,
                          stat_ema=0.5)
        opt.attach(layer)
        return layer, opt

    def train(layer, opt, steps):
        for t in steps:
            g = torch.Generator().manual_seed(t)
            x = torch.randn(32, 12, generator=g) * torch.logspace(0, -1, 12)
            opt.zero_grad()
            layer(x).pow(2).mean().backward()
            opt.step()

    layer, opt = fresh()
    train(layer, opt, range(1, 11))  # selections before steps 4, 6 and 11
    saved = (copy.deepcopy(layer.state_dict()), copy.deepcopy(opt.state_dict()))
    train(layer, opt, range(11, 13))
    resumed_layer, resumed_opt = fresh()
    resumed_layer.load_state_dict(saved[0])
    resumed_opt.load_state_dict(saved[1])
    assert any(key.startswith("sel_") for key in resumed_opt.state[resumed_layer.weight])
    train(resumed_layer, resumed_opt, range(11, 13))
    assert resumed_opt.state[resumed_layer.weight]["p"] == opt.state[layer.weight]["p"]
    assert torch.equal(resumed_layer.weight, layer.weight)
