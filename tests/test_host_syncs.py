"""No optimizer step waits on the host: counted on CPU, where a blocking device-to-host read
(`.item()`, `float(t)`, `.tolist()`...) and a tensor built from Python data on the parameters'
device (`torch.tensor(v, device=...)`, a blocking host-to-device copy on a GPU) are still
Python calls that can be counted. torch's own step counters live on the host by design
(reading them syncs nothing); SMuon's p selection runs on the host by the authors' design
(scipy), on its selection steps only."""

import pytest
import torch

import optim
from optim import ours
from tests.test_optim_api import Net, batch

READS = ("item", "__float__", "__bool__", "__int__", "tolist", "cpu", "numpy")


class HostSyncs:
    """Counts the Python calls that synchronize a GPU with the host, except reads of the
    tensors in `host_side` (step counters kept on the host)."""

    def __init__(self, host_side: set[int]):
        self.host_side, self.calls = host_side, []

    def __enter__(self):
        self.saved = {name: getattr(torch.Tensor, name) for name in READS}
        for name, original in self.saved.items():
            def read(t, *args, _original=original, _name=name, **kwargs):
                if id(t) not in self.host_side:
                    self.calls.append(_name)
                return _original(t, *args, **kwargs)
            setattr(torch.Tensor, name, read)
        self.saved_tensor = torch.tensor

        def tensor(data, *args, **kwargs):
            if kwargs.get("device") is not None:  # built on the parameters' device
                self.calls.append("torch.tensor(device=...)")
            return self.saved_tensor(data, *args, **kwargs)

        torch.tensor = tensor
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)
        torch.tensor = self.saved_tensor


def host_counters(opt) -> set[int]:
    return {id(v) for st in opt.state.values() for k, v in st.items()
            if k.endswith("step") and isinstance(v, torch.Tensor) and v.device.type == "cpu"}


def syncs_per_step(spec, steps=(3, 4)) -> dict[int, list[str]]:
    model = Net()
    opt = spec.cls(optim.param_groups(model, spec.matrix), **spec.example)
    if hasattr(opt, "attach"):
        opt.attach(model)
    out = {}
    for step in range(1, max(steps) + 1):
        idx, y = batch(step)
        opt.zero_grad()
        ((model(idx) - y) ** 2).mean().backward()
        with HostSyncs(host_counters(opt)) as counted:
            opt.step()
        if step in steps:
            out[step] = counted.calls
    return out


# The default path of each of our optimizers; the compiled (`fused=True`) path of each fused
# one is counted in tests/test_optim_fused.py, on every variant it compiles there (a compile
# of S3's kernel takes a minute on two cores: one per variant, not two).
CASES = ours()


@pytest.mark.parametrize("spec", CASES, ids=[s.name for s in CASES])
def test_an_optimizer_step_makes_no_host_sync(spec):
    if spec.name == "smuon":  # selection steps read on the host by design: not steps 3, 4
        assert spec.example.get("select_every", 1) != 1
    counted = syncs_per_step(spec)
    assert counted == {3: [], 4: []}


def test_the_counter_sees_the_syncs_it_must_forbid():
    """A step that builds a device scalar with torch.tensor, or reads a state tensor, counts."""
    with HostSyncs(set()) as counted:
        x = torch.ones(3)
        torch.tensor(0.1, device=x.device)
        float(x.sum())
        x.sum().item()
    assert counted.calls == ["torch.tensor(device=...)", "__float__", "item"]



@pytest.mark.parametrize("precision", ["fp8_emulated", "fp4_emulated"])
def test_emulated_precision_rounds_without_host_syncs(precision):
    """The FP8/FP4 emulation rounds every gradient and state tensor each step: it must not ask
    the host anything per tensor (it asked whether amax > 0 once per state tensor)."""
    from tasks.train.precision import Precision

    model = Net()
    rounding = Precision(precision, torch.device("cpu"), compute="fp32")
    rounding.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    for step in range(1, 4):
        idx, y = batch(step)
        opt.zero_grad()
        ((model(idx) - y) ** 2).mean().backward()
        opt.step()
        with HostSyncs(host_counters(opt)) as counted:
            rounding.after_backward(model.parameters())
            rounding.after_step(opt)
        if step > 1:  # the first call places the FP4 grid on the device, once
            assert counted.calls == []
    zero = torch.zeros(4)
    from tasks.train.precision import round_state_e4m3
    round_state_e4m3(zero)
    assert torch.equal(zero, torch.zeros(4))  # an all-zero state stays zero, not NaN
