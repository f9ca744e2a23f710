"""Each elementwise optimizer's kernel, its one definition of the update, gives the same steps
eager (the reference) and compiled (`fused=True`: one pass per tensor), and so does its foreach
path where it keeps one; and the two helpers it relies on (a Newton cube
root and counter-based uniform noise) match exact math and are uniform."""

import math

import pytest
import torch

import optim
from optim import ours
from optim._fused import Kernel, _cbrt, hash_uniform, noise_keys, root
from tests.test_host_syncs import HostSyncs, host_counters

STEPS = 12
SHAPES = [(40, 24), (24,), (3, 4, 5)]
# every branch of every fused kernel (the registry's variants): p's special cases, nesterov,
# each base × envelope × stochastic, both phases of the switched sign methods and the first
# soft step's fit
CASES = {(f"{spec.name}_{variant}" if variant else spec.name): (spec.cls, kwargs)
         for spec in ours() if spec.fused
         for variant, kwargs in (spec.fused_variants or {"": spec.example}).items()}
# S3's eps = 0 branch (a zero denominator, where every gradient so far was 0, divides by 1):
# compiled here against the kernel, whose own test (test_optim_math) holds the coordinate still;
# some gradients are exactly 0 from the first step, so 0/0 would show as a NaN in one path
CASES["s3_p2.5"] = (CASES["s3_p2.5"][0], {**CASES["s3_p2.5"][1], "eps": 0.0})


def trajectory(cls, kw, path, dtype=torch.float32, syncs=None):
    """Parameters after each step, and the optimizer, on one of the paths: "kernel" (eager),
    "fused" (compiled) or "foreach". With `syncs` (a list), the host syncs of each step after
    the second are appended to it (run it compiled once before: a compile reads the host)."""
    params = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(i))
                                 .to(dtype)) for i, s in enumerate(SHAPES)]
    opt = cls(params, fused=path == "fused", **kw)
    opt.reference = path == "kernel"
    out = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        for p in params:
            # heavy-tailed gradients, some exact zeros
            grad = torch.randn(p.shape, generator=g) / torch.rand(p.shape, generator=g) ** 0.5
            p.grad = (grad * (torch.rand(p.shape, generator=g) > 0.1)).to(dtype)
        unfitted = [g.get("tau_schedule", 0) is None for g in opt.param_groups]
        if syncs is not None and step >= 2:
            with HostSyncs(host_counters(opt)) as counted:
                opt.step()
            fitted = any(u and g["tau_schedule"] is not None
                         for u, g in zip(unfitted, opt.param_groups))
            if not fitted:  # the first soft step fits τ on the host, once, by design
                syncs.extend(counted.calls)
        else:
            opt.step()
        out.append([p.detach().float().clone() for p in params])
    return out, opt


def assert_same_run(reference, ref_opt, other, other_opt, path):
    for step, (a, b) in enumerate(zip(reference, other)):
        for x, y in zip(a, b):
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"{path}, step {step + 1}: {m}")
    # the state too (momenta, envelopes, previous gradients, the temperature schedule)
    sa, sb = ref_opt.state_dict(), other_opt.state_dict()
    for k, st in sa["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                torch.testing.assert_close(sb["state"][k][key], value, rtol=1e-5, atol=1e-6)
    # hyperparameters equal; the temperature schedule, fit from the momenta, up to rounding
    # (the fused kernel's multiply-adds are contracted to FMAs)
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        assert {k: v for k, v in ga.items() if k not in ("fused", "tau_schedule")} == \
            {k: v for k, v in gb.items() if k not in ("fused", "tau_schedule")}
        schedule_a, schedule_b = ga.get("tau_schedule"), gb.get("tau_schedule")
        assert (schedule_a is None) == (schedule_b is None)  # fitted in both paths or neither
        if schedule_a is not None:
            assert schedule_b == pytest.approx(schedule_a, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_every_path_equals_the_eager_kernel(name):
    """... and the compiled path waits on the host at no step (tests/test_host_syncs.py
    counts the other paths; the compiled one is counted here, where it is compiled anyway)."""
    cls, kw = CASES[name]
    reference, ref_opt = trajectory(cls, kw, "kernel")
    paths = ["fused"] + (["foreach"] if cls.has_foreach_path() else [])
    for path in paths:
        other, other_opt = trajectory(cls, kw, path)
        assert_same_run(reference, ref_opt, other, other_opt, path)
    syncs = []  # every graph compiled above: a second compiled run, its syncs counted
    trajectory(cls, kw, "fused", syncs=syncs)
    assert syncs == [], f"the compiled path's host syncs: {syncs}"


BIT_EXACT_FOREACH = {name: case for name, case in CASES.items()
                     if issubclass(case[0], optim.StochasticSign)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(BIT_EXACT_FOREACH))
def test_the_stochastic_sign_foreach_path_is_its_kernel_bit_for_bit(name, dtype):
    """The stochastic sign methods' foreach path runs the kernel's operations in their order,
    in place: the same numbers to the last bit (so a run's numbers did not change when it
    became the default), noise included, weight decay included, every step."""
    cls, kw = BIT_EXACT_FOREACH[name]
    kw = {**kw, "weight_decay": 0.1}
    reference, ref_opt = trajectory(cls, kw, "kernel", dtype)
    other, other_opt = trajectory(cls, kw, "foreach", dtype)
    for a, b in zip(reference, other):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for k, st in ref_opt.state_dict()["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                assert torch.equal(other_opt.state_dict()["state"][k][key], value), key


@pytest.mark.slow  # a cold compile of the bf16 kernel: about a minute on two cores
def test_fused_path_with_bf16_parameters_keeps_them_bf16():
    reference, _ = trajectory(optim.S3, {"lr": 1e-2}, "kernel", dtype=torch.bfloat16)
    fused, opt = trajectory(optim.S3, {"lr": 1e-2}, "fused", dtype=torch.bfloat16)
    for a, b in zip(reference[-1], fused[-1]):
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-2)
    assert all(p.dtype == torch.bfloat16 for p in opt.param_groups[0]["params"])
    assert all(v.dtype == torch.float32 for st in opt.state.values() for v in st.values()
               if torch.is_tensor(v) and v.is_floating_point())


def test_a_changing_lr_does_not_recompile():
    p = torch.nn.Parameter(torch.randn(10))
    opt = optim.Signum([p], lr=1e-2, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))
    # a fresh compile, so that the first step is seen compiling (the counter works) and any
    # later compile is a recompile
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    p.grad = torch.randn(10)
    opt.step()
    sched.step()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    for _ in range(5):
        p.grad = torch.randn(10)
        opt.step()
        sched.step()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 1


# ---------------------------------------------------------------- helpers


@pytest.mark.slow  # five compiles, one per p
def test_roots_match_exact_math_over_the_float_range():
    x64 = torch.cat([torch.logspace(-37, 37, 20001, dtype=torch.float64),
                     torch.rand(20000, dtype=torch.float64)])
    x = x64.float()
    # bounds close to what each path reaches (measured: p = 2, 4 under 1.3e-7, the cube root
    # 2.4e-7, pow at p = 2.5 5.6e-7; one fp32 ulp is 1.2e-7), so that a broken coefficient or
    # a lost iteration shows by a wide margin
    bounds = {1: 0.0, 2: 2.4e-7, 3: 4e-7, 4: 2.4e-7, 2.5: 1e-6}
    for p, bound in bounds.items():
        exact = x.double().pow(1.0 / p)
        for fn in (root, Kernel(root).compiled()):
            got = fn(x, p).double()
            assert ((got - exact) / exact).abs().max() <= bound, (p, fn)
    assert torch.equal(_cbrt(torch.zeros(4)), torch.zeros(4))


def test_hash_uniform_is_uniform_symmetric_and_independent():
    n = 400_000
    k = noise_keys(0, 1, 0)
    u = hash_uniform(torch.empty(n), *k)
    assert u.min() > -1 and u.max() < 1
    assert abs(u.mean().item()) < 5 * math.sqrt(1 / 3 / n)
    assert abs(u.var().item() - 1 / 3) < 0.005
    counts = torch.histc(u, bins=50, min=-1, max=1)
    chi2 = (((counts - n / 50) ** 2) / (n / 50)).sum().item()
    assert chi2 < 100  # 49 degrees of freedom: p < 1e-5 beyond this
    # the grid is symmetric: u and −u are equally likely values
    grid = (u * 2**23 + 0.5).floor() - (u * 2**23 - 0.5).ceil()
    assert torch.all(grid == 1)  # every value sits half-way between multiples of 2^-23
    # other step, other tensor slot, other seed: uncorrelated streams
    for other in (noise_keys(0, 2, 0), noise_keys(0, 1, 1), noise_keys(1, 1, 0)):
        v = hash_uniform(torch.empty(n), *other)
        assert abs(torch.corrcoef(torch.stack([u, v]))[0, 1]) < 5 / math.sqrt(n)
    assert abs(torch.corrcoef(torch.stack([u[1:], u[:-1]]))[0, 1]) < 5 / math.sqrt(n)


def test_compiled_noise_equals_eager_noise():
    k = [torch.tensor(x, dtype=torch.int32) for x in noise_keys(3, 7, 2)]
    like = torch.empty(10_001)
    assert torch.equal(Kernel(hash_uniform).compiled()(like, *k), hash_uniform(like, *k))


# where a tensor's update depends on its own history only: no noise keyed by its position, no
# statistics pooled over tensors (`shardable`); the switched sign methods in their sign phase
ALONE_CASES = {**{name: case for name, case in CASES.items() if case[0].shardable},
               "softsignum_sign_phase": (optim.SoftSignum, {"lr": 1e-2, "total_steps": 12,
                                                            "sign_fraction": 1.0})}


@pytest.mark.parametrize("path", ["kernel", "foreach"])
@pytest.mark.parametrize("name", sorted(ALONE_CASES))
def test_a_tensor_that_skips_a_step_keeps_its_own_step_count(name, path):
    """A parameter without a gradient at some step (a frozen branch, an unused embedding row's
    tensor) falls behind the others; its bias corrections and first-step flags are then those
    of its own step count, as if it were trained alone, and the tensors after it keep theirs
    (the per-step values of distinct step counts live in distinct device slots)."""
    cls, kw = ALONE_CASES[name]
    if path == "foreach" and not cls.has_foreach_path():
        pytest.skip(f"{cls.__name__} has no foreach path")
    torch.manual_seed(0)
    inits = [torch.randn(6, 4), torch.randn(5), torch.randn(3, 3)]
    skipping = 1  # the middle one: a tensor at the others' step count comes after it

    def train(indices):
        params = [torch.nn.Parameter(inits[i].clone()) for i in indices]
        opt = cls(params, **kw)
        opt.reference = path == "kernel"
        for step in range(6):
            g = torch.Generator().manual_seed(step)
            grads = [torch.randn(x.shape, generator=g) for x in inits]
            for p, i in zip(params, indices):
                p.grad = None if (i == skipping and step in (1, 2)) else grads[i].clone()
            opt.step()
        return [p.detach() for p in params]

    together = train([0, 1, 2])
    for i in (0, 1, 2):
        torch.testing.assert_close(together[i], train([i])[0], rtol=1e-6, atol=1e-7)


def test_a_run_asking_for_compiled_kernels_without_a_compiler_falls_back_saying_so(
        monkeypatch, capsys, tmp_path):
    """optim.fused=true (a paper scale's default) on a node without Triton or a C++ compiler:
    the default path runs instead, with a notice on stderr and in the run's summary."""
    from tasks import run
    from tasks.train import assemble
    from tests.conftest import compose_cfg

    monkeypatch.setattr(assemble, "compiler_missing", lambda device: "no C++ compiler (test)")
    cfg = compose_cfg(["task=nonsmooth", "optim=s3", "optim.fused=true", "steps=4",
                       "progress=false"], runs_root=tmp_path / "runs",
                      data_root=tmp_path / "data")
    summary = run(cfg)
    assert "NOTICE: optim.fused=true, but no C++ compiler (test): running S3's default path" \
        in capsys.readouterr().err
    assert summary["optimizer_path"] == {
        "ran": "foreach", "notice": "optim.fused=true, but no C++ compiler (test): running "
                                    "S3's default path instead (the same math, equal to "
                                    "rounding)"}


def test_paper_scales_compile_by_default_and_an_override_turns_it_off():
    from sweeps import spec

    paper, tiny = (spec.load("s3_spikes").at(s) for s in ("paper", "tiny"))
    fused = {r.optim: "optim.fused=true" in r.overrides for r in paper.expand()}
    assert fused == {"s3": True, "adan": True, "adamw": False, "adam": False, "nadam": False}
    assert not any("optim.fused=true" in r.overrides for r in tiny.expand())
    off = [r for r in paper.expand(["optim.fused=false"]) if r.optim == "s3"]
    assert off and all(r.overrides.index("optim.fused=false") > r.overrides.index(
        "optim.fused=true") for r in off)  # the later override wins
