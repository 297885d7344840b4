"""Per-session preprocessing primitives: running statistics, detrend, noise, MIN1PIPE."""

from __future__ import annotations

import numpy as np
import pytest

from califlow.params import round_half_up
from califlow.preprocess.detrend import detrend_block, detrend_context, detrend_windows
from califlow.preprocess.enhance import anisotropic_diffusion, fill_dark_specks, neuron_enhance
from califlow.preprocess.filters import disk, gaussian_blur_stack, opening_stack
from califlow.preprocess.noise import NoiseAccumulator, get_sn, smooth_noise_map
from califlow.preprocess.temporal import running_max, running_median, running_min, window_extent


def _brute(x, k, func):
    before, after = window_extent(k)
    return np.stack([func(x[max(0, t - before):t + after + 1], axis=0) for t in range(len(x))])


@pytest.mark.parametrize("n", [70, 7, 2, 1])
@pytest.mark.parametrize("k", [1, 2, 5, 10, 11, 20, 31, 33, 40, 101])
def test_running_statistics_match_matlab_windows(k, n):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(n, 4, 3)).astype(np.float32)
    x[3:6] = 1.0  # ties
    np.testing.assert_allclose(running_median(x, k), _brute(x, k, np.median), atol=1e-6)
    np.testing.assert_array_equal(running_min(x, k), _brute(x, k, np.min))
    np.testing.assert_array_equal(running_max(x, k), _brute(x, k, np.max))


def test_window_extent_follows_matlab():
    assert window_extent(10) == (5, 4)
    assert window_extent(11) == (5, 5)
    with pytest.raises(ValueError):
        window_extent(0)


def _trace_movie(rng, T=1200, fps=20.0):
    t = np.arange(T) / fps
    baseline = 50 + 20 * np.sin(2 * np.pi * t / 200.0)[:, None, None] + np.zeros((T, 3, 3))
    spikes = np.zeros((T, 3, 3))
    events = [e for e in (200, 520, 900) if e + 60 <= T]
    kernel = np.exp(-np.arange(60) / (0.8 * fps))
    for e in events:
        spikes[e:e + 60] += 30 * kernel[:, None, None]
    noise = rng.normal(scale=1.0, size=(T, 3, 3))
    return (baseline + spikes + noise).astype(np.float32), events


def test_detrend_removes_slow_baseline_and_keeps_transients():
    rng = np.random.default_rng(0)
    y, events = _trace_movie(rng)
    out = detrend_block(y, fps=20.0, detrend_s=1.0)
    quiet = np.ones(len(y), bool)
    for e in events:
        quiet[e - 5:e + 80] = False
    # baseline gone: quiet frames sit within a few noise sigma of 0 (running min of medians)
    assert abs(float(np.median(out[quiet]))) < 2.0
    # the 20-DN drift is gone (what is left is the running minimum's lag, < 2 DN here)
    assert float(np.percentile(np.abs(out[quiet]), 99)) < 5.0
    assert float(np.percentile(np.abs(y[quiet] - np.median(y[quiet])), 99)) > 15.0
    for e in events:
        assert float(out[e:e + 3].mean()) > 0.8 * 30


def test_detrend_streams_exactly_with_context():
    rng = np.random.default_rng(1)
    y, _ = _trace_movie(rng, T=700)
    whole = detrend_block(y, 20.0, 1.0)
    ctx = detrend_context(20.0, 1.0)
    assert detrend_windows(20.0, 1.0) == (20, 100)
    parts = []
    for a in range(0, 700, 150):
        b = min(700, a + 150)
        lo, hi = max(0, a - ctx), min(700, b + ctx)
        parts.append(detrend_block(y[lo:hi], 20.0, 1.0)[a - lo:b - lo])
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(detrend_block(y, 20.0, 0), y)


@pytest.mark.parametrize("method,tol", [("mean", 0.04), ("logmexp", 0.08), ("median", 0.1)])
def test_noise_of_white_noise(method, tol):
    rng = np.random.default_rng(2)
    x = (0.7 * rng.standard_normal((1000, 20, 20))).astype(np.float32)
    sn = get_sn(x, method=method)
    assert abs(float(np.median(sn)) - 0.7) / 0.7 < tol


def test_noise_ignores_slow_signal_and_windows_agree():
    rng = np.random.default_rng(3)
    t = np.arange(1000)[:, None, None]
    slow = 10 * np.sin(2 * np.pi * t / 200.0)  # 20x the noise, below 0.25 cycles/frame
    x = (slow + 0.5 * rng.standard_normal((1000, 10, 10))).astype(np.float32)
    assert abs(float(np.median(get_sn(x, method="mean"))) - 0.5) < 0.03
    acc = NoiseAccumulator(method="mean")
    for a in range(0, 1000, 100):
        acc.add(x[a:a + 100])
    assert abs(float(np.median(acc.sn())) - 0.5) < 0.03
    with pytest.raises(ValueError, match="100 frames"):
        acc.add(x[:50])
    sm = smooth_noise_map(acc.sn())
    assert sm.shape == (10, 10) and np.all(sm > 0)


def test_enhancement_keeps_neurons_and_removes_background():
    h = w = 96
    yy, xx = np.mgrid[0:h, 0:w]
    background = 200 * np.exp(-((yy - 40) ** 2 + (xx - 50) ** 2) / (2 * 30.0 ** 2))
    blob = 40 * np.exp(-((yy - 30) ** 2 + (xx - 30) ** 2) / (2 * 2.5 ** 2))
    speck = np.zeros((h, w))
    speck[70, 70] = -60
    frame = (100 + background + blob + speck).astype(np.float32)
    out = neuron_enhance(np.stack([frame, frame]), gsig=2.5, value_range=(float(frame.min()), float(frame.max())))
    assert out.shape == (2, h, w) and np.all(out >= 0)
    span = float(frame.max() - frame.min())
    peak = out[0, 30, 30] * span
    assert peak > 0.3 * 40  # the neuron survives (diffusion spreads it, the opening keeps its base)
    far = out[0, 60:90, 5:25] * span
    assert float(far.max()) < 0.05 * 40  # the wide background is gone
    assert out[0, 70, 70] * span < 0.05 * 40  # the dark speck does not become a feature
    assert round_half_up(2 * 2.5) == 5 and disk(5).sum() == 81


def test_filters_on_stacks_match_frame_by_frame():
    rng = np.random.default_rng(4)
    stack = rng.normal(size=(3, 40, 30)).astype(np.float32)
    blurred = gaussian_blur_stack(stack, 2.0)
    import cv2
    for i in range(3):
        ref = cv2.GaussianBlur(stack[i], (13, 13), 2.0, borderType=cv2.BORDER_REPLICATE)
        np.testing.assert_allclose(blurred[i], ref, atol=1e-5)
    opened = opening_stack(stack, 3)
    assert np.all(opened <= stack + 1e-6)
    dirt = fill_dark_specks(stack, 2.0)
    assert np.all(dirt >= stack)
    diffused = anisotropic_diffusion(stack * 0.01)
    assert float(diffused.std()) < float((stack * 0.01).std())
    np.testing.assert_allclose(diffused.mean(axis=(1, 2)), (stack * 0.01).mean(axis=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("chunks", [[700], [1, 2, 60, 637], [150] * 4 + [100], [59, 61, 580]])
def test_detrend_stream_is_exact_for_any_chunking(chunks):
    from califlow.preprocess.detrend import DetrendStream

    rng = np.random.default_rng(6)
    y, _ = _trace_movie(rng, T=700)
    whole = detrend_block(y, 20.0, 1.0)
    stream = DetrendStream(20.0, 1.0)
    got = np.zeros_like(whole)
    done = a = 0
    for k, n in enumerate(chunks):
        start, out = stream.push(y[a:a + n], last=k == len(chunks) - 1)
        assert start == done
        got[start:start + len(out)] = out
        done += len(out)
        a += n
    assert done == 700
    np.testing.assert_array_equal(got, whole)
    off = DetrendStream(20.0, 0)
    assert off.push(y[:10])[1].shape == (10, 3, 3)
