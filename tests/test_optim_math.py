"""Each update against an independent reference written from the papers' equations, over many steps,
or against torch.optim where an equivalent exists."""

import copy
import math

import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz as torch_ns

import optim
from optim.spectral import (
    MUADAM_COEFFICIENTS,
    MUADAM_POLAR_EXPRESS,
    polar_express_coefficients,
    schatten_power,
    soft_sign_matrix,
)
from optim.temperature import folded_cauchy_quantiles

# the compiled path: a compile of a kernel takes up to a minute on two cores (the full tier)
COMPILED = pytest.param(True, marks=pytest.mark.slow, id="True")

F64 = torch.float64  # references in fp64: differences are the method's own


def grad_stream(shape, steps, seed=0, heavy=False):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if heavy:  # Cauchy-like: ratio of normals
            x = x / torch.randn(shape, generator=g, dtype=torch.float64).abs().clamp(min=1e-3)
        yield x


def run_optimizer(opt_cls, shape, steps, data_seed=0, heavy=False, init=None, **kw):
    p = torch.nn.Parameter(init.clone() if init is not None else torch.zeros(shape, dtype=F64))
    opt = opt_cls([p], **kw)
    for g in grad_stream(shape, steps, data_seed, heavy):
        p.grad = g.clone()
        opt.step()
    return p.detach()


def run_reference(update, shape, steps, seed=0, heavy=False, init=None):
    """`update(theta, g, state, t)` returns the new theta; t counts from 1."""
    theta = init.clone() if init is not None else torch.zeros(shape, dtype=F64)
    state = {}
    for t, g in enumerate(grad_stream(shape, steps, seed, heavy), start=1):
        theta = update(theta, g, state, t)
    return theta


SHAPE = (7, 5)
INIT = torch.linspace(-1, 1, 35, dtype=F64).reshape(SHAPE)


# ---------------------------------------------------------------- S3


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 4.5])
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("beta2", [None, 0.99])
def test_s3_matches_reference(p, nesterov, beta2):
    lr, beta, eps, wd = 0.01, 0.9, 1e-2, 0.1  # ε large: misplacing it shows
    b2 = beta if beta2 is None else beta2

    def ref(theta, g, s, t):
        s["m"] = beta * s.get("m", 0) + (1 - beta) * g
        s["r"] = b2 * s.get("r", 0) + (1 - b2) * g.abs() ** p
        if nesterov:
            n = beta * s["m"] + (1 - beta) * g
            b = (b2 * s["r"] + (1 - b2) * g.abs() ** p) ** (1 / p)
        else:
            n, b = s["m"], s["r"] ** (1 / p)
        return theta * (1 - lr * wd) - lr * n / (b + eps)

    got = run_optimizer(optim.S3, SHAPE, 60, init=INIT, lr=lr, beta=beta, p=p,
                        nesterov=nesterov, eps=eps, weight_decay=wd, beta2=beta2)
    torch.testing.assert_close(got, run_reference(ref, SHAPE, 60, init=INIT))


def test_s3_p2_without_nesterov_is_adam_with_equal_betas_and_no_bias_correction():
    """Adam(β, β) = S3(p=2) with lr_t = lr/sqrt(1 − β^t) when ε = 0: torch's Adam bias-corrects,
    so the S3 side gets that factor through a torch LR scheduler (which also tests schedulers)."""
    beta, lr = 0.9, 0.01
    pa = torch.nn.Parameter(INIT.clone())
    ps = torch.nn.Parameter(INIT.clone())
    adam = torch.optim.Adam([pa], lr=lr, betas=(beta, beta), eps=0.0)
    s3 = optim.S3([ps], lr=lr, beta=beta, p=2, nesterov=False, eps=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(s3, lambda k: 1 / math.sqrt(1 - beta ** (k + 1)))
    for g in grad_stream(SHAPE, 50):
        pa.grad, ps.grad = g.clone(), g.clone()
        adam.step()
        s3.step()
        sched.step()
    torch.testing.assert_close(ps.detach(), pa.detach())


def test_s3_update_is_bounded_by_lr_on_heavy_tailed_gradients():
    p = torch.nn.Parameter(torch.zeros(2000, dtype=F64))
    opt = optim.S3([p], lr=0.1, beta=0.95, p=3, nesterov=True, eps=0.0)
    worst = 0.0
    for g in grad_stream((2000,), 200, heavy=True):
        before = p.detach().clone()
        p.grad = g
        opt.step()
        worst = max(worst, float((p.detach() - before).abs().max()))
    assert worst <= 0.1 * (1 + 1e-12)
    assert worst > 0.04  # large steps happen: the bound is not met by making every step tiny


def test_s3_with_zero_eps_does_not_move_a_coordinate_that_never_had_a_gradient():
    # the compiled path is held to this kernel at eps = 0 in test_optim_fused (s3_p2.5), where
    # S3 is compiled anyway: a compile of its own here cost 75 s of the suite
    p = torch.nn.Parameter(torch.ones(4, 8))
    opt = optim.S3([p], lr=0.1, eps=0.0)
    for step in range(5):
        g = torch.randn(4, 8, generator=torch.Generator().manual_seed(step))
        g[:, 0] = 0.0  # column 0 never sees a gradient
        p.grad = g
        opt.step()
    assert torch.isfinite(p).all()
    assert torch.equal(p.detach()[:, 0], torch.ones(4))
    assert (p.detach()[:, 1:] != 1).all()
    assert ((p.detach() - 1).abs() <= 5 * 0.1 + 1e-6).all()  # |step| <= lr, every step


def test_s3_first_step_is_the_built_in_warmup():
    p = torch.nn.Parameter(torch.zeros(10, dtype=F64))
    opt = optim.S3([p], lr=1.0, beta=0.95, p=3, eps=0.0)
    p.grad = torch.ones(10, dtype=F64)
    opt.step()
    torch.testing.assert_close(-p.detach(),
                               torch.full((10,), (1 - 0.95**2) ** (1 - 1 / 3), dtype=F64))


# ---------------------------------------------------------------- sign family, Adan


def test_signum_with_zero_beta_is_signsgd():
    a = run_optimizer(optim.Signum, SHAPE, 40, init=INIT, lr=0.01, beta=0.0, weight_decay=0.1)
    b = run_optimizer(optim.SignSGD, SHAPE, 40, init=INIT, lr=0.01, weight_decay=0.1)
    torch.testing.assert_close(a, b)


def test_signum_and_lion_match_reference():
    lr, wd = 0.01, 0.1

    def signum(theta, g, s, t):
        s["m"] = 0.9 * s.get("m", 0) + 0.1 * g
        return theta * (1 - lr * wd) - lr * torch.sign(s["m"])

    def lion(theta, g, s, t):
        m = s.get("m", torch.zeros_like(g))
        c = 0.9 * m + 0.1 * g
        s["m"] = 0.99 * m + 0.01 * g
        return theta * (1 - lr * wd) - lr * torch.sign(c)

    torch.testing.assert_close(
        run_optimizer(optim.Signum, SHAPE, 40, init=INIT, lr=lr, beta=0.9, weight_decay=wd),
        run_reference(signum, SHAPE, 40, init=INIT))
    torch.testing.assert_close(
        run_optimizer(optim.Lion, SHAPE, 40, init=INIT, lr=lr, betas=(0.9, 0.99),
                      weight_decay=wd),
        run_reference(lion, SHAPE, 40, init=INIT))


def test_adan_matches_reference():
    lr, (b1, b2, b3), eps, wd = 0.01, (0.98, 0.92, 0.99), 1e-2, 0.02  # ε large: misplacing it shows

    def ref(theta, g, s, t):
        prev = s.get("prev", g)
        d = g - prev
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * d
        s["n"] = b3 * s.get("n", 0) + (1 - b3) * (g + b2 * d) ** 2
        s["prev"] = g
        upd = (s["m"] / (1 - b1**t) + b2 * s["v"] / (1 - b2**t)) / (
            (s["n"] / (1 - b3**t)).sqrt() + eps)
        return theta * (1 - lr * wd) - lr * upd

    got = run_optimizer(optim.Adan, SHAPE, 50, init=INIT, lr=lr, betas=(b1, b2, b3), eps=eps,
                        weight_decay=wd)
    torch.testing.assert_close(got, run_reference(ref, SHAPE, 50, init=INIT))


# ---------------------------------------------------------------- StoSignSGD and the framework


@pytest.mark.parametrize("base", ["sgd", "momentum", "adam"])
def test_deterministic_conversion_is_sign_of_the_base_direction(base):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8

    def ref(theta, g, s, t):
        if base == "sgd":
            d = g
        else:
            s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
            d = s["m"]
            if base == "adam":
                s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
                d = (s["m"] / (1 - b1**t)) / ((s["v"] / (1 - b2**t)).sqrt() + eps)
        return theta - lr * torch.sign(d)

    for envelope in ("max", "current"):
        got = run_optimizer(optim.StochasticSign, SHAPE, 30, init=INIT, lr=lr, base=base,
                            envelope=envelope, stochastic=False, beta1=b1, beta2=b2, eps=eps)
        torch.testing.assert_close(got, run_reference(ref, SHAPE, 30, init=INIT))


def test_current_envelope_makes_the_stochastic_sign_deterministic():
    a = run_optimizer(optim.StochasticSign, SHAPE, 30, init=INIT, envelope="current",
                      stochastic=True, seed=1)
    b = run_optimizer(optim.Signum, SHAPE, 30, init=INIT, beta=0.9)
    torch.testing.assert_close(a, b)


def check_mean_step_is_lr_d_over_envelope(make, direction_of, seed, scale=1.0):
    """Many rows share one gradient history, so one step gives that many independent draws:
    the mean last step must be −lr·d/D, d the reference direction and D its running max.
    `scale` multiplies the gradients. Returns the optimizer, its parameter, the reference's
    last d and D."""
    rows, d, lr = 40_000, 6, 0.1
    p = torch.nn.Parameter(torch.zeros(rows, d, dtype=F64))
    opt = make([p], lr)
    state, D = {}, torch.zeros(1, d, dtype=F64)
    for t, g in enumerate((scale * g for g in grad_stream((1, d), 8, seed=seed)), start=1):
        direction = direction_of(state, g, t)
        D = torch.maximum(D, direction.abs())
        before = p.detach().clone()
        p.grad = g.expand(rows, d).clone()
        opt.step()
    mean_step = (p.detach() - before).mean(0)
    expected = -lr * (direction / D).squeeze(0)
    assert (direction.abs() < D).any(), "the test needs coordinates strictly inside the envelope"
    assert (mean_step - expected).abs().max() < 5 * lr / math.sqrt(rows), (mean_step, expected)
    return opt, p, direction, D


def test_stosignsgd_mean_update_is_lr_m_over_G():
    def momentum(state, g, t):
        state["m"] = 0.9 * state.get("m", 0) + 0.1 * g
        return state["m"]

    opt, p, m, G = check_mean_step_is_lr_d_over_envelope(
        lambda ps, lr: optim.StoSignSGD(ps, lr=lr, beta1=0.9, seed=0), momentum, seed=3)
    torch.testing.assert_close(opt.state[p]["exp_avg"][0], m[0])
    torch.testing.assert_close(opt.state[p]["envelope"][0], G[0])


@pytest.mark.slow
def test_adam_based_stochastic_sign_mean_update_is_lr_d_over_its_envelope():
    """base=adam: d = m̂/(sqrt(v̂) + ε) with BOTH moments bias-corrected, D its running max.
    (Without m's correction the early d shrink by 1 − β1^t and the envelope, set at step 1, no
    longer bounds the same direction: the ratio moves.)"""
    b1, b2, eps = 0.9, 0.999, 1e-8

    def adam(state, g, t):
        state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
        return (state["m"] / (1 - b1**t)) / ((state["v"] / (1 - b2**t)).sqrt() + eps)

    check_mean_step_is_lr_d_over_envelope(
        lambda ps, lr: optim.StochasticSign(ps, lr=lr, base="adam", envelope="max", beta1=b1,
                                            beta2=b2, eps=eps, seed=2), adam, seed=4)
    # gradients of 1e-6, where ε = 1e-8 added outside the square root moves d by 1% and
    # inside it (sqrt(v̂ + ε) ≈ 1e-4) would shrink it a hundredfold: ε's place is checked
    for fused in (False, True):
        check_mean_step_is_lr_d_over_envelope(
            lambda ps, lr: optim.StochasticSign(ps, lr=lr, base="adam", envelope="max",
                                                beta1=b1, beta2=b2, eps=eps, seed=2,
                                                fused=fused), adam, seed=4, scale=1e-6)


def test_stosignsgd_seed_comes_back_from_the_state_dict():
    """A resumed optimizer built with the default seed continues the saved run's noise."""
    def build(seed=0):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.zeros(200, dtype=F64))
        return w, optim.StoSignSGD([w], lr=0.1, seed=seed)

    def train(w, opt, steps):
        for t in steps:
            w.grad = torch.sin(torch.arange(200, dtype=F64) * (t + 1))
            opt.step()

    w, opt = build(seed=5)
    train(w, opt, range(3))
    saved = (w.detach().clone(), copy.deepcopy(opt.state_dict()))
    train(w, opt, range(3, 6))
    w2, opt2 = build()  # the constructor's seed (0) is not the run's
    with torch.no_grad():
        w2.copy_(saved[0])
    opt2.load_state_dict(saved[1])
    train(w2, opt2, range(3, 6))
    assert torch.equal(w2.detach(), w.detach())


def test_stosignsgd_zero_envelope_does_not_move():
    p = torch.nn.Parameter(torch.ones(100, dtype=F64))
    opt = optim.StoSignSGD([p], lr=0.1)
    p.grad = torch.zeros(100, dtype=F64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(100, dtype=F64))


def test_stosignsgd_same_seed_same_noise_other_seed_other_noise():
    a = run_optimizer(optim.StoSignSGD, (50,), 20, seed=0, lr=0.1)
    b = run_optimizer(optim.StoSignSGD, (50,), 20, seed=0, lr=0.1)
    c = run_optimizer(optim.StoSignSGD, (50,), 20, seed=1, lr=0.1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("fused", [False, COMPILED])
def test_stochastic_sign_noise_is_fresh_every_step_and_for_every_tensor(fused):
    """After a step with gradient 1 the max-envelope is 1; with zero gradients after it each
    step is lr·sign(u) with u the noise, so the steps expose the noise. Noise repeated across
    steps, or shared by same-shaped tensors, would make these sign patterns agree."""
    n = 20_000
    a, b = (torch.nn.Parameter(torch.zeros(n)) for _ in range(2))
    opt = optim.StochasticSign([a, b], lr=1.0, base="sgd", envelope="max", seed=7,
                               fused=fused)
    steps = []
    for grad in (1.0, 0.0, 0.0):
        before = [a.detach().clone(), b.detach().clone()]
        a.grad, b.grad = torch.full((n,), grad), torch.full((n,), grad)
        opt.step()
        steps.append([before[0] - a.detach(), before[1] - b.detach()])
    (a2, b2), (a3, _) = steps[1], steps[2]
    assert set(a2.unique().tolist()) <= {-1.0, 0.0, 1.0}
    noise = 4 / n ** 0.5  # four binomial standard deviations of a fair-coin share
    for x, y in ((a2, b2), (a2, a3)):
        assert abs((x == y).float().mean().item() - 0.5) < noise
    assert abs((a2 > 0).float().mean().item() - 0.5) < noise


# ---------------------------------------------------------------- SoftSignum / HardSwitchSign


def cauchy_quantile_by_bisection(mu, s, rho):
    def F(q):
        return (math.atan((q - mu) / s) - math.atan((-q - mu) / s)) / math.pi

    lo, hi = 0.0, 1.0
    while F(hi) < rho:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if F(mid) < rho else (lo, mid)
    return (lo + hi) / 2


def test_folded_cauchy_quantiles_solve_the_cdf():
    values = torch.distributions.Cauchy(0.3, 0.05).sample((20001,))
    mu = float(values.median())
    s = float((values - mu).abs().median())
    q = folded_cauchy_quantiles(values, 50)
    for j in range(1, 50):
        assert q[j].item() == pytest.approx(cauchy_quantile_by_bisection(mu, s, j / 50), rel=1e-6)


@pytest.mark.parametrize("tau_max", [20.0, 1e9])  # the default (official class), unclamped
@pytest.mark.parametrize("nesterov", [False, True])
def test_softsignum_matches_reference_across_the_switch(nesterov, tau_max):
    T, frac, lr, beta, eps, wd = 40, 0.5, 0.01, 0.9, 1e-4, 0.01
    S, N = int(frac * T), T - int(frac * T)

    def ref(theta, g, s, t):
        k = t - 1
        s["buf"] = g.clone() if k == 0 else beta * s["buf"] + g
        u = g + beta * s["buf"] if nesterov else s["buf"]
        theta = theta * (1 - lr * wd)
        if k < S:
            return theta - lr * torch.sign(u)
        if "tau" not in s:
            mu = float(u.flatten().median())
            sc = float((u.flatten() - mu).abs().median())
            s["tau"] = []
            for j in range(N):
                q = cauchy_quantile_by_bisection(mu, sc, j / N) if j else 0.0
                tau = math.atanh(1 - eps) / q if q > 0 else math.inf
                s["tau"].append(min(max(tau, 1.0), tau_max))
        return theta - lr * torch.tanh(s["tau"][min(k - S, N - 1)] * u)

    unclamped = {} if tau_max == 20.0 else {"tau_max": tau_max}
    got = run_optimizer(optim.SoftSignum, SHAPE, T + 5, init=INIT, lr=lr, total_steps=T,
                        sign_fraction=frac, eps=eps, momentum=beta, nesterov=nesterov,
                        weight_decay=wd, **unclamped)
    torch.testing.assert_close(got, run_reference(ref, SHAPE, T + 5, init=INIT),
                               rtol=1e-5, atol=1e-7)


def unsaturated_shares(tau_max, T=100, frac=0.5, n=200_000):
    """Per soft step j ≥ 1, the share of coordinates whose step is magnitude-sensitive
    (|tanh(τ_j·u)| < 1 − ε), for u = g (no momentum) with Cauchy(0, 1e-3) entries, the scale
    of typical momenta."""
    g = torch.distributions.Cauchy(0.0, 1e-3).sample((n,)).double()
    p = torch.nn.Parameter(torch.zeros(n, dtype=F64))
    extra = {} if tau_max is None else {"tau_max": tau_max}
    opt = optim.SoftSignum([p], lr=1.0, total_steps=T, sign_fraction=frac, momentum=0.0,
                           **extra)
    shares = {}
    for k in range(T):
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        j = k - int(frac * T)
        if j >= 1:
            shares[j] = ((before - p.detach()).abs() < 1 - 1e-4).double().mean().item()
    return shares, T - int(frac * T)


def test_softsignum_unclamped_unsaturated_share_tracks_rho():
    """tau_max=1e9 (the schedule as the text describes it): a share ρ_j = j/N is
    magnitude-sensitive at soft step j, the rest saturated (sign-like until the end)."""
    torch.manual_seed(0)
    shares, N = unsaturated_shares(1e9)
    for j, share in shares.items():
        assert share == pytest.approx(j / N, abs=0.01), (j, share)


def test_softsignum_default_tau_max_leaves_the_soft_phase_unsaturated():
    """The default tau_max=20 (the official SoftSignum class): with momenta ~1e-3, τ is clamped
    at 20 from the first soft step and only the Cauchy tail beyond atanh(1−ε)/20 ≈ 0.25
    saturates (2/π·1e-3/0.25 ≈ 0.26%): the soft phase is momentum SGD at lr·τ."""
    torch.manual_seed(0)
    shares, _ = unsaturated_shares(None)
    tail = 2 / math.pi * math.atan(1e-3 / (math.atanh(1 - 1e-4) / 20))
    for j, share in shares.items():
        assert share == pytest.approx(1 - tail, abs=1e-3), (j, share)


def test_hardswitchsign_is_signum_then_momentum_sgd():
    T, lr = 20, 0.01

    def ref(theta, g, s, t):
        s["buf"] = g.clone() if t == 1 else 0.9 * s["buf"] + g
        return theta - lr * (torch.sign(s["buf"]) if t <= 10 else s["buf"])

    got = run_optimizer(optim.HardSwitchSign, SHAPE, T, init=INIT, lr=lr, total_steps=T,
                        sign_fraction=0.5, momentum=0.9)
    torch.testing.assert_close(got, run_reference(ref, SHAPE, T, init=INIT))


# ---------------------------------------------------------------- Muon family


def svd_map(x, f):
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    return (u * f(s)) @ vh


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (24, 24)])
def test_spectral_maps_match_an_exact_svd(shape):
    x = torch.randn(shape, dtype=torch.float32)
    for tau in (0.3, 3.0, 1e3):
        want = svd_map(x, lambda s: tau * s / torch.sqrt(1 + tau**2 * s**2))
        got = soft_sign_matrix(x, tau).double()
        assert (got - want).norm() / want.norm() < 1e-2 * 1e-3
    for p in (1.0, 1.5, 3.0, 10.0, math.inf):
        want = svd_map(x, lambda s: s ** (1 / p) if math.isfinite(p) else torch.ones_like(s))
        got = schatten_power(x, p).double()
        assert (got - want).norm() / want.norm() < 1e-2 * 1e-3


def test_muon_matches_torch_optim_muon():
    torch.manual_seed(0)
    w0 = torch.randn(32, 48, dtype=torch.float32)
    ours = torch.nn.Parameter(w0.clone())
    theirs = torch.nn.Parameter(w0.clone())
    a = optim.Muon([ours], lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01,
                   ns_dtype="bf16")
    b = torch.optim.Muon([theirs], lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01)
    for _ in range(30):
        g = torch.randn(32, 48, dtype=torch.float32)
        ours.grad, theirs.grad = g.clone(), g.clone()
        a.step()
        b.step()
    # torch's momentum is undampened (B ← μB + g): the same direction after normalization, up
    # to bf16 rounding of inputs at a different scale
    rel = (ours.detach() - theirs.detach()).norm() / (w0 - theirs.detach()).norm()
    assert rel < 2e-2


def test_muon_flattens_conv_kernels_and_scales_by_flattened_shape():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(64, 4, 3, 3, dtype=torch.float32))  # 2-D: (64, 36)
    opt = optim.Muon([w], lr=1.0, momentum=0.0, nesterov=False, ns_dtype="fp32")
    g = torch.randn(64, 4, 3, 3, dtype=torch.float32)
    w.grad = g
    opt.step()
    want = -torch_ns(g.reshape(64, 36), (3.4445, -4.7750, 2.0315), 5, 1e-7).float() \
        * math.sqrt(64 / 36)
    # torch's reference runs in bf16, ours in fp32 here: agree to bf16 precision
    assert (w.detach().reshape(64, 36) - want).norm() / want.norm() < 2e-2


def polar_express_reference(x, coefficients):
    """The authors' MuAdam orthogonalization, written from its definition in float64."""
    y = x.double().mT if x.shape[0] > x.shape[1] else x.double()
    y = y / (y.norm() + 1e-7)
    for a, b, c in coefficients:
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    return (y.T if x.shape[0] > x.shape[1] else y).float()


@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])  # tall: the rows/cols scale shows
@pytest.mark.parametrize("orthogonalizer, rows_cols_scale", [("polar_express", False),
                                                             ("newton_schulz", True)])
def test_muadam_matches_reference(orthogonalizer, rows_cols_scale, shape):
    torch.manual_seed(1)
    w0 = torch.randn(shape, dtype=torch.float32)
    lr, b1, b2, eps = 0.02, 0.9, 0.999, 0.5  # ε large: misplacing it shows
    w = torch.nn.Parameter(w0.clone())
    opt = optim.MuAdam([w], lr=lr, momentum=b1, beta2=b2, eps=eps, ns_dtype="fp32",
                       orthogonalizer=orthogonalizer, rows_cols_scale=rows_cols_scale)
    coefficients = polar_express_coefficients(**MUADAM_POLAR_EXPRESS)
    scale = math.sqrt(max(1.0, shape[0] / shape[1])) if rows_cols_scale else 1.0
    theta, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for t in range(1, 21):
        g = torch.randn(shape, dtype=torch.float32)
        w.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        n = (m / (1 - b1**t)) * b1 + (1 - b1) * g
        D = (v / (1 - b2**t) + eps) ** -0.25
        if orthogonalizer == "polar_express":
            o = polar_express_reference(D * n, coefficients)
        else:
            o = torch_ns(D * n, (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
        theta = theta - lr * D * o * scale
    # torch's NS reference runs in bf16, ours in fp32 here
    tol = 1e-4 if orthogonalizer == "polar_express" else 1e-2
    assert (w.detach() - theta).norm() / (theta - w0).norm() < tol


def test_muadam_polar_express_schedule_is_rederived_and_lands_near_one():
    derived = polar_express_coefficients(**MUADAM_POLAR_EXPRESS)
    assert [c for step in derived for c in step] == pytest.approx(
        [c for step in MUADAM_COEFFICIENTS for c in step], abs=2e-6)
    # the cushion's recentring: the first quintic (before its safety factor) errs by the same
    # amount above 1 at u = 1 as below 1 at l = 1e-3
    a, b, c = (k * s for k, s in zip(derived[0], (1.01, 1.01**3, 1.01**5)))
    q = lambda x: a * x + b * x**3 + c * x**5  # noqa: E731
    assert 1 - q(1e-3) == pytest.approx(q(1.0) - 1, abs=1e-9)
    x = torch.logspace(-3, 0, 20001, dtype=F64)
    for a, b, c in MUADAM_COEFFICIENTS:
        x = a * x + b * x**3 + c * x**5
    assert 0.86 < x.min().item() < x.max().item() < 1.14


def smuon_direction(moment_type, p, g_seq, **kw):
    """Minus the first update of SMuon with a fixed p (lr = 1)."""
    w = torch.nn.Parameter(torch.zeros(g_seq[0].shape, dtype=torch.float32))
    opt = optim.SMuon([w], lr=1.0, moment_type=moment_type, fixed_p=p, exact=True, **kw)
    for g in g_seq:
        before = w.detach().clone()
        w.grad = g.clone()
        opt.step()
    return before - w.detach()


def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_smuon_special_cases():
    torch.manual_seed(2)
    gs = [torch.randn(10, 16, dtype=torch.float32) for _ in range(5)]
    b1, b2, eps = 0.95, 0.999, 1e-8
    m = torch.zeros(10, 16)
    v = torch.zeros(10, 16)
    for g in gs:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
    n = (m / (1 - b1**5)).lerp(gs[-1], 1 - b1)
    v_hat = v / (1 - b2**5)
    polar = svd_map(n, torch.ones_like).float()
    # none, p = 1: normalized momentum SGD (norm pinned to Muon's sqrt(min(rows, cols)))
    got = smuon_direction("none", 1.0, gs)
    torch.testing.assert_close(got, n * math.sqrt(10) / n.norm(), rtol=1e-4, atol=1e-6)
    # none, p = inf: Muon with an exact polar factor
    torch.testing.assert_close(smuon_direction("none", math.inf, gs), polar,
                               rtol=1e-4, atol=1e-5)
    # padam, p = 1: Adam's direction (unpinned: Adam's own scale; pinned: its direction)
    adam = n / (v_hat + eps).sqrt()
    got = smuon_direction("padam", 1.0, gs, pin="none")
    torch.testing.assert_close(got, adam, rtol=1e-4, atol=1e-5)
    pinned = smuon_direction("padam", 1.0, gs)  # no aux group: pinned to √min(rows, cols)
    torch.testing.assert_close(pinned, adam * math.sqrt(10) / adam.norm(), rtol=1e-4,
                               atol=1e-5)
    # adam (e = -1/4), p = inf: MuAdam's D ⊙ polar(D ⊙ n)
    D = (v_hat + eps) ** -0.25
    want = D * svd_map(D * n, torch.ones_like).float()
    torch.testing.assert_close(smuon_direction("adam", math.inf, gs, pin="none"), want,
                               rtol=1e-4, atol=1e-4)
    assert cosine(smuon_direction("adam", math.inf, gs), want) > 0.9999


@pytest.mark.parametrize("regime, rho", [("noisy", math.sqrt(0.2 / 1.8)), ("determ", 1.0)])
def test_smuon_kappa_pin_moves_from_adams_step_to_muons(regime, rho):
    """‖lr·O‖_F = lr·√min·κ^(1/p), κ = lr_aux·ρ·√max/lr: at p = ∞ Muon's √min, at p = 1 a
    per-coordinate RMS of lr_aux·ρ (the aux Adam's step), for a tall matrix."""
    torch.manual_seed(3)
    rows, cols, lr, aux_lr = 24, 6, 0.02, 3e-3
    kappa = aux_lr * rho * math.sqrt(rows) / lr
    for p in (1.0, 2.5, math.inf):
        w = torch.nn.Parameter(torch.zeros(rows, cols))
        bias = torch.nn.Parameter(torch.zeros(rows))
        opt = optim.SMuon([w, bias], lr=lr, moment_type="padam", fixed_p=p, exact=True,
                          aux_lr=aux_lr, aux_betas=(0.8, 0.95), kappa_regime=regime)
        w.grad, bias.grad = torch.randn(rows, cols), torch.randn(rows)
        opt.step()
        want = lr * math.sqrt(cols) * kappa ** (1 / p)
        assert w.detach().norm().item() == pytest.approx(want, rel=1e-5)
        if p == 1.0:
            rms = w.detach().norm().item() / math.sqrt(rows * cols)
            assert rms == pytest.approx(aux_lr * rho, rel=1e-5)
    # pin=muon: √min at every p, whatever the aux Adam
    w = torch.nn.Parameter(torch.zeros(rows, cols))
    bias = torch.nn.Parameter(torch.zeros(rows))
    opt = optim.SMuon([w, bias], lr=lr, moment_type="adam", fixed_p=1.5, exact=True,
                      aux_lr=aux_lr, pin="muon")
    w.grad, bias.grad = torch.randn(rows, cols), torch.randn(rows)
    opt.step()
    assert w.detach().norm().item() == pytest.approx(lr * math.sqrt(cols), rel=1e-5)


@pytest.mark.parametrize("shape", [(9, 14), (14, 9)])  # wide and tall: the rows/cols scale
@pytest.mark.parametrize("moment_type, pin", [("none", "kappa"), ("adam", "kappa"),
                                              ("padam", "kappa"), ("adam", "none"),
                                              ("padam", "none")])
def test_smuon_matches_reference_at_intermediate_p(moment_type, pin, shape):
    torch.manual_seed(4)
    p, b1, b2, eps, lr, wd = 3.0, 0.95, 0.999, 1e-2, 0.05, 0.1  # ε large: misplacing it shows
    aux_lr, aux_b1 = 2e-3, 0.9
    rows, cols = shape
    w0 = torch.randn(shape, dtype=torch.float32)
    w = torch.nn.Parameter(w0.clone())
    bias = torch.nn.Parameter(torch.zeros(rows))  # the aux group κ is built from
    opt = optim.SMuon([w, bias], lr=lr, moment_type=moment_type, fixed_p=p, weight_decay=wd,
                      eps=eps, exact=True, pin=pin, aux_lr=aux_lr, aux_betas=(aux_b1, 0.95))
    theta, m, v = w0.double(), torch.zeros(shape, dtype=F64), torch.zeros(shape, dtype=F64)
    kappa = aux_lr * math.sqrt((1 - aux_b1) / (1 + aux_b1)) * math.sqrt(max(shape)) / lr
    for t in range(1, 8):
        g = torch.randn(shape, dtype=torch.float32)
        w.grad, bias.grad = g.clone(), torch.zeros(rows)
        opt.step()
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        n = (m / (1 - b1**t)) * b1 + (1 - b1) * g
        if moment_type == "none":
            o = svd_map(n, lambda s: s ** (1 / p))
            o = o * math.sqrt(min(shape)) / o.norm()
        else:
            e = -0.25 if moment_type == "adam" else -1 / (2 * (p + 1))
            D = (v / (1 - b2**t) + eps) ** e
            o = D * svd_map(D * n, lambda s: s ** (1 / p))
            if pin == "kappa":  # pinned: no rows/cols factor on top
                o = o * math.sqrt(min(shape)) * kappa ** (1 / p) / o.norm()
            else:
                o = o * math.sqrt(max(1.0, rows / cols))
        theta = theta * (1 - lr * wd) - lr * o
    torch.testing.assert_close(w.detach().double(), theta, rtol=1e-4, atol=1e-5)


SHAPE_SCALES = {  # (scale of a rows × cols update, weight decay) per shape_scale
    "muon": (lambda r, c: math.sqrt(max(1.0, r / c)), 0.0),
    # softsign softmuon/d_softmuon.py: lr·0.2·sqrt(max(A, B)), p·(1 − lr·wd) with wd 0.1
    "moonlight": (lambda r, c: 0.2 * math.sqrt(max(r, c)), 0.1),
}


@pytest.mark.parametrize("shape_scale", sorted(SHAPE_SCALES))
def test_softmuon_matches_reference_across_the_switch(shape_scale):
    """Muon's NS5 before the switch; after it the exact soft sign with τ_j = c/q_j, c =
    (1−ε)/sqrt(1 − (1−ε)²) ≈ 70.7, q_j the j/N quantile of the folded Cauchy fitted to the
    singular values of the RAW gradients at the first soft step (its quantiles by bisection,
    independent of the Newton fit). Both phases take the shape scale: Muon's, or Moonlight's
    RMS-matched one with its weight decay (the official repo's Megatron-style SoftMuon)."""
    torch.manual_seed(5)
    shapes, total, fraction, beta, lr, eps = [(12, 20), (20, 12)], 8, 0.5, 0.95, 0.02, 1e-4
    scale, wd = SHAPE_SCALES[shape_scale]
    w0 = [torch.randn(s) for s in shapes]
    ws = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = optim.SoftMuon(ws, lr=lr, total_steps=total, sign_fraction=fraction, momentum=beta,
                         eps=eps, exact=True, ns_dtype="fp32", shape_scale=shape_scale,
                         weight_decay=wd)
    theta = [w.double() for w in w0]
    m = [torch.zeros(s, dtype=F64) for s in shapes]
    switch, taus = int(fraction * total), None
    c = (1 - eps) / math.sqrt(1 - (1 - eps) ** 2)
    for k in range(total):
        gs = [torch.randn(s) for s in shapes]
        for w, g in zip(ws, gs):
            w.grad = g.clone()
        opt.step()
        if k == switch:  # the schedule, from the raw gradients' singular values
            sv = torch.cat([torch.linalg.svdvals(g.double()) for g in gs])
            mu = sv.median().item()
            s = (sv - mu).abs().median().item()
            n = total - switch
            q = [cauchy_quantile_by_bisection(mu, s, j / n) if j else 0.0
                 for j in range(n)]  # the 0-quantile is 0: τ_0 = τ_max
            taus = [min(max(c / x, 1.0), 1e9) if x > 0 else 1e9 for x in q]
        for i, g in enumerate(gs):
            m[i] = beta * m[i] + (1 - beta) * g.double()
            u = (1 - beta) * g.double() + beta * m[i]
            if k < switch:
                o = torch_ns(u.float(), (3.4445, -4.7750, 2.0315), 5, 1e-7).double()
            else:
                tau = taus[k - switch]
                o = svd_map(u, lambda x, tau=tau: tau * x / torch.sqrt(1 + (tau * x) ** 2))
            theta[i] = theta[i] * (1 - lr * wd) - lr * o * scale(*shapes[i])
        for w, t, start in zip(ws, theta, w0):
            # bf16 NS in torch's reference before the switch, fp32 in ours: bf16 precision
            assert (w.detach().double() - t).norm() / (t - start.double()).norm() < 2e-2, k
    assert opt.param_groups[0]["tau_schedule"] == pytest.approx(taus, rel=1e-6)


@pytest.mark.parametrize("p", [3.0, 2.5, 5.0])
def test_the_s3_default_paths_root_is_the_exact_root_to_a_few_ulps(p):
    """S3's foreach path takes x^(1/p) as 2^(log2(x)/p) (2.5x faster than pow on a CPU):
    within 3e-6 relative of the exact root over the float range;
    between 1e-10 and 1e10 1.5e-6; zeros and infinities stay what they are."""
    from optim.s3 import _root_

    x = torch.cat([torch.logspace(-37, 38, 100001), torch.rand(100000),
                   torch.tensor([0.0, float("inf")])]).float()
    got = [x.clone()]
    _root_(got, p)
    exact = x.double().pow(1.0 / p)
    finite = exact.isfinite() & (exact > 0)
    relative = ((got[0].double() - exact).abs() / exact)[finite]
    assert relative.max() < 3e-6
    usual = finite & (x > 1e-10) & (x < 1e10)
    assert ((got[0].double() - exact).abs() / exact)[usual].max() < 1.5e-6
    assert got[0][-2] == 0 and got[0][-1] == float("inf")
