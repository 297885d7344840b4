"""Projections: the vessel-pulse regression on a synthetic movie with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from califlow.motion import projections as proj


def _pulsing_movie(T=600, size=48, seed=3):
    """Noise (sigma 1) + a vertical vessel whose contrast follows a slow course + a neuron on it."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    course = np.convolve(rng.standard_normal(T + 80), np.ones(40) / np.sqrt(40), mode="same")[40:40 + T]
    course = 3.0 * (course - course.mean()) / course.std()
    yy, xx = np.mgrid[0:size, 0:size]
    gain = np.exp(-0.5 * ((xx - 20) / 2.0) ** 2)            # vessel profile, 1 at its centre line
    neuron = np.exp(-0.5 * (((yy - 24) ** 2 + (xx - 21) ** 2) / 2.0 ** 2))
    trace = np.zeros(T)
    for s in rng.choice(T - 30, 8, replace=False):         # 8 transients of amplitude 6
        trace[s:] += 6.0 * np.exp(-(t[s:] - s) / 12.0)
    noise = rng.standard_normal((T, size, size)).astype(np.float32)
    movie = (noise + course[:, None, None] * gain + trace[:, None, None] * neuron).astype(np.float32)
    return movie, gain, neuron, trace, noise


def test_vessel_pulse_is_regressed_out_and_the_neuron_kept():
    movie, gain, neuron, trace, noise = _pulsing_movie()
    mask = proj.vessel_mask(gain)
    assert mask is not None and mask.sum() == 48 * 7   # |x - 20| <= 3
    pulse = proj.VesselPulse(mask)
    for a in range(0, len(movie), 70):                      # any chunking
        v = pulse.course(movie[a:a + 70])
        pulse.add(movie[a:a + 70], v)
    beta = pulse.finish()
    # beta is the pixel's share of the mask-average pulse: gain / mean gain over the mask
    expected = gain / gain[mask].mean()
    # (off the neuron, whose transients correlate with the course by chance)
    assert np.abs(beta - expected)[neuron < 0.01].max() < 0.1
    clean = pulse.remove(movie, pulse.course(movie))
    far = (neuron < 0.01) & (gain > 0.3)
    # on the vessel away from the neuron only the noise (sigma 1) remains
    assert 0.9 < float(clean[:, far].std(axis=0).mean()) < 1.1
    assert float(movie[:, far].std(axis=0).mean()) > 2.0
    # the neuron's centre keeps its transients (amplitude 6): what is left besides the noise
    # and the neuron is a slow wave of < 10 % of a transient (chance correlation with the course)
    left = clean[:, 24, 21] - noise[:, 24, 21] - trace
    assert float(left.std()) < 0.6 and float(np.abs(left).max()) < 2.0
    assert float((movie[:, 24, 21] - noise[:, 24, 21] - trace).std()) > 2.0
    # the correlation image no longer shows the vessel; the neuron stays
    def cn(y):
        acc = proj.CorrelationAccumulator(y.shape[1:])
        acc.add(y)
        return acc.image()
    before, after = cn(movie), cn(clean)
    assert float(before[far].mean()) > 0.5 and float(after[far].mean()) < 0.05
    assert after[24, 21] > 0.5


def test_no_vessels_no_mask():
    bv = np.zeros((40, 40), np.float32)
    bv[5, :30] = 1.0                                         # 30 px < MIN_VESSEL_PIXELS
    assert proj.vessel_mask(bv) is None
    bv[6, :30] = 1.0
    assert proj.vessel_mask(bv).sum() == 60


def test_constant_course_gives_zero_beta():
    mask = np.zeros((10, 10), bool)
    mask[:, 3] = True
    pulse = proj.VesselPulse(mask)
    frames = np.random.default_rng(0).standard_normal((50, 10, 10)).astype(np.float32)
    pulse.add(frames, np.full(50, 2.0))
    assert np.all(pulse.finish() == 0)
    np.testing.assert_allclose(pulse.remove(frames, np.full(50, 2.0)), frames)


def test_thresholded_correlation_equals_the_explicit_copy():
    rng = np.random.default_rng(4)
    y = rng.standard_normal((50, 9, 11)).astype(np.float32)
    thr = rng.uniform(-0.5, 0.5, (9, 11)).astype(np.float32)
    off = rng.uniform(-0.2, 0.2, (9, 11)).astype(np.float32)
    fused = proj.CorrelationAccumulator((9, 11))
    fused.add(y, thr, off)
    explicit = proj.CorrelationAccumulator((9, 11))
    explicit.add(np.where(y >= thr, y - off, 0).astype(np.float32))
    assert np.array_equal(fused.image(), explicit.image())
    # the explicit image is the mean Pearson correlation with the in-image neighbours
    z = np.where(y >= thr, y - off, 0).astype(np.float64)
    r = np.corrcoef(z[:, 4, 5], z[:, 4, 6])[0, 1]
    assert fused.sxy[0, 4, 5] / 50 - z[:, 4, 5].mean() * z[:, 4, 6].mean() == pytest.approx(
        r * z[:, 4, 5].std() * z[:, 4, 6].std(), rel=1e-6)
