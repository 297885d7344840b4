"""Time courses of a simulated session: spikes, calcium, background fluctuations, motion.

All functions are vectorised over time (``scipy.signal.lfilter``), return float32 and take
an explicit :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

__all__ = [
    "ar1_process",
    "spike_trains",
    "calcium_kernel_coefficients",
    "calcium_traces",
    "rigid_motion",
]


def ar1_process(n_series: int, n_frames: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) series (n_series, n_frames) float32 with unit std and zero mean (in law)."""
    e = rng.standard_normal((n_series, n_frames)) * np.sqrt(1 - phi ** 2)
    e[:, 0] = rng.standard_normal(n_series)   # start in the stationary distribution
    return signal.lfilter([1.0], [1.0, -phi], e, axis=1).astype(np.float32)


def spike_trains(n_neurons: int, n_frames: int, fps: float, *, rate_hz: np.ndarray, amplitude: np.ndarray,
                 event_jitter: float, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson event trains with per-event amplitudes, (K, T) float32.

    Parameters
    ----------
    rate_hz : (K,) mean event rate per neuron (Hz).
    amplitude : (K,) median event amplitude per neuron (DN at the footprint peak).
    event_jitter : log-normal sigma of per-event amplitudes.
    correlation : 0..1; rates are modulated by three shared slow latent processes with this
        weight (log-normal modulation that preserves the mean rate).

    Returns
    -------
    S : (K, T) float32, event count x amplitude per frame (0 where no event).
    """
    p = np.repeat((rate_hz / fps)[:, None], n_frames, axis=1)
    if correlation > 0 and n_frames > 1:
        latent = ar1_process(3, n_frames, np.exp(-1 / (2.0 * fps)), rng)        # ~2 s time scale
        load = rng.dirichlet(np.ones(3), n_neurons)                              # (K, 3)
        u = load @ latent
        u /= np.maximum(u.std(axis=1, keepdims=True), 1e-6)
        sig = 1.5 * correlation
        p = p * np.exp(sig * u - sig ** 2 / 2)
    counts = rng.poisson(np.minimum(p, 1.0))
    jitter = np.exp(event_jitter * rng.standard_normal(counts.shape) - event_jitter ** 2 / 2)
    return (counts * amplitude[:, None] * jitter).astype(np.float32)


def calcium_kernel_coefficients(tau_rise: float, tau_decay: float, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """IIR filter (b, a) of the double-exponential kernel h_t ∝ d^(t+1) - r^(t+1), peak 1.

    d = exp(-1/(tau_decay fps)), r = exp(-1/(tau_rise fps)); the kernel is the AR(2) impulse
    response, so an event at frame t0 rises from frame t0 on.
    """
    d = np.exp(-1 / (tau_decay * fps))
    r = np.exp(-1 / (tau_rise * fps))
    t = np.arange(int(10 * tau_decay * fps) + 10)
    peak = np.max(d ** (t + 1) - r ** (t + 1))
    return np.array([(d - r) / peak]), np.array([1.0, -(d + r), d * r])


def calcium_traces(spikes: np.ndarray, tau_rise: np.ndarray, tau_decay: np.ndarray, fps: float) -> np.ndarray:
    """Noise-free calcium C = S convolved with each neuron's double-exponential kernel, (K, T) float32."""
    out = np.empty(spikes.shape, np.float32)
    for k in range(spikes.shape[0]):                     # loop over neurons; lfilter is vectorised in time
        b, a = calcium_kernel_coefficients(float(tau_rise[k]), float(tau_decay[k]), fps)
        out[k] = signal.lfilter(b, a, spikes[k].astype(np.float64))
    return out


def rigid_motion(n_frames: int, *, std: float, phi: float, n_jumps: int, jump_max: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Within-session translation d_t (T, 2) float32 (dy, dx) in px: AR(1) plus persistent jumps.

    The AR(1) part has stationary std ``std`` per axis and coefficient ``phi``; each jump is a
    uniformly random vector of norm up to ``jump_max`` added from a random frame on, rounded
    off over 3 frames.
    """
    d = ar1_process(2, n_frames, phi, rng).T * np.float32(std)
    if n_jumps > 0 and n_frames > 10:
        steps = np.zeros((n_frames, 2), np.float64)
        at = rng.integers(5, n_frames - 5, n_jumps)
        ang = rng.uniform(0, 2 * np.pi, n_jumps)
        mag = rng.uniform(0.3, 1.0, n_jumps) * jump_max
        np.add.at(steps, at, np.stack([mag * np.sin(ang), mag * np.cos(ang)], axis=1))
        jumps = ndimage.uniform_filter1d(np.cumsum(steps, axis=0), 3, axis=0, mode="nearest")
        d = d + jumps.astype(np.float32)
    return d.astype(np.float32)
