"""Spike, divergence and convergence metrics on synthetic curves with known answers."""

import math

import numpy as np
import pytest

from tasks.train.metrics import (
    LossTracker,
    SpikeConfig,
    auc_log_loss,
    count_events,
    ema_spike_steps,
    first_at_target,
    sigma_spike_steps,
)


def smooth_curve(n=400, seed=0):
    """A decaying loss with 1% multiplicative noise: no spikes under either rule."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return list(2.0 + 3.0 * np.exp(-t / 80) * (1 + 0.01 * rng.standard_normal(n)))


def with_spikes(curve, at, factor=2.0, width=1):
    out = list(curve)
    for start in at:
        for t in range(start, start + width):
            out[t] *= factor
    return out


def test_smooth_curve_has_no_spikes():
    curve = smooth_curve()
    assert ema_spike_steps(curve) == []
    assert sigma_spike_steps(curve) == []


def test_ema_rule_finds_exactly_the_injected_spikes():
    curve = with_spikes(smooth_curve(), at=[120, 250, 251, 252, 330], factor=1.8)
    steps = ema_spike_steps(curve)
    assert steps == [120, 250, 251, 252, 330]
    assert count_events(steps) == 3  # 250..252 is one event


def test_ema_threshold_is_strict_at_delta():
    cfg = SpikeConfig(delta=0.2, warmup=0)
    flat = [1.0] * 10
    assert ema_spike_steps(flat + [1.19] + flat, cfg) == []
    assert ema_spike_steps(flat + [1.21] + flat, cfg) == [10]


def test_warmup_hides_early_spikes():
    curve = with_spikes(smooth_curve(), at=[10], factor=3.0)
    assert ema_spike_steps(curve, SpikeConfig(warmup=50)) == []
    assert 10 in ema_spike_steps(curve, SpikeConfig(warmup=5))


def test_sigma_rule_on_flat_noisy_curve():
    rng = np.random.default_rng(1)
    curve = list(3.0 + 0.01 * rng.standard_normal(300))
    curve[200] += 0.2  # ~20 sigma
    curve[260] += 0.03  # ~3 sigma: not a spike at k=7
    assert sigma_spike_steps(curve, window=100, k=7.0) == [200]


def test_tracker_matches_pure_functions_and_reports_ratio():
    curve = with_spikes(smooth_curve(), at=[150, 300], factor=1.5)
    tracker = LossTracker(SpikeConfig())
    for t, loss in enumerate(curve):
        assert not tracker.update(t, loss).diverged
    s = tracker.summary()
    assert s["spike_count"] == 2
    assert s["spike_steps"] == 2
    assert s["spike_rate"] == pytest.approx(2 / (len(curve) - 50))
    assert s["max_spike_ratio"] == pytest.approx(1.5, rel=0.05)
    assert s["sigma_spike_score"] == pytest.approx(
        len(sigma_spike_steps(curve)) / (len(curve) - 100))
    assert s["auc_log_loss"] == pytest.approx(auc_log_loss(curve))
    assert s["final_train_loss"] == curve[-1]
    assert s["best_train_loss"] == min(curve)


def test_tracker_state_round_trip_continues_identically():
    curve = with_spikes(smooth_curve(), at=[90, 310], factor=1.6)
    whole = LossTracker()
    for t, x in enumerate(curve):
        whole.update(t, x)
    first = LossTracker()
    for t, x in enumerate(curve[:200]):
        first.update(t, x)
    second = LossTracker()
    second.load_state_dict(first.state_dict())
    for t, x in enumerate(curve[200:], start=200):
        second.update(t, x)
    assert second.summary() == whole.summary()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_diverges(bad):
    tracker = LossTracker()
    tracker.update(0, 5.0)
    verdict = tracker.update(1, bad)
    assert verdict.diverged and "non-finite" in verdict.reason


def test_loss_above_cap_diverges():
    tracker = LossTracker(SpikeConfig(cap_factor=3.0))
    tracker.update(0, 5.0)
    assert not tracker.update(1, 14.9).diverged
    verdict = tracker.update(2, 15.1)
    assert verdict.diverged and "3.0x" in verdict.reason


def test_auc_and_target():
    assert auc_log_loss([math.e, math.e ** 3]) == pytest.approx(2.0)
    evals = [(100, 2.5), (200, 1.9), (300, 1.4), (400, 1.3)]
    assert first_at_target(evals, 1.5, "min") == 300
    assert first_at_target(evals, 1.0, "min") is None
    assert first_at_target(evals, None) is None
    assert first_at_target([(1, 0.3), (2, 0.6)], 0.5, "max") == 2


@pytest.mark.parametrize("kwargs,key", [
    ({"delta": 0}, "metrics.delta"), ({"ema_decay": 1.0}, "ema_decay"),
    ({"sigma_window": 1}, "sigma_window"), ({"cap_factor": 0.5}, "cap_factor"),
])
def test_bad_spike_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SpikeConfig(**kwargs)
