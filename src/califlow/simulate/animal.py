"""Simulate one animal: anatomy, activity and motion up front, frames lazily per block.

Image model of session s, frame t (raw-frame pixel q, values in DN above the dark offset)::

    canvas_t  = S0_s (1 + g_t) - v_t V_s + sum_j f_jt B_sj + sum_k c_kt A_sk      (session frame)
    mean_t(q) = illum(q) * canvas_t(q - d_t - w_t(q))                             (tissue moves,
    raw_t(q)  = quantise(offset + mean_t(q) + noise)                               sensor is fixed)

with S0 = tissue fluorescence x vessel transmission, V the pulsating part of the vessel
shading, B wide local background sources, A neuron footprints plus their neuropil halo (all
shaded by vessels), g a global fluctuation, d_t the rigid motion and w_t an optional wobble.
Session frames are reference-frame tissue warped by ``q -> q - t_s - D_s(q)``
(translation plus smooth non-rigid deformation).

Frames are rendered in fixed blocks of :data:`BLOCK` frames aligned to the session start, and
the noise of frame t is drawn from a generator seeded by (seed, session, t), so any chunking
returns identical frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numba
import numpy as np
import scipy.sparse as sp
from scipy import ndimage, signal

from califlow.errors import ConfigError
from califlow.simulate import activity, anatomy
from califlow.simulate.config import SimulationConfig
from califlow.simulate.groundtruth import GroundTruth

__all__ = ["simulate_animal", "SimulatedAnimal", "BLOCK"]

#: frames rendered together; blocks are aligned to the session start (chunking-independent)
BLOCK = 32

# stream tags of np.random.default_rng([seed, tag, ...]); one per independent random draw
_T_CENTERS, _T_SHAPES, _T_VESSELS, _T_TEXTURE, _T_ILLUM, _T_LOCAL, _T_RATES = range(7)
_T_TURNOVER, _T_SPIKES, _T_MOTION, _T_BG, _T_SESSION, _T_NOISE, _T_ALIGNED_NOISE, _T_WOBBLE = range(7, 15)
_T_DEFOCUS = 15

_WOBBLE_FIELDS = 3


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(t) for t in tags]])


@dataclass
class _Session:
    """Rendering state of one session (session-canvas components, flattened)."""

    margin: int
    canvas_shape: tuple[int, int]
    dense: np.ndarray         # (2+J, Np): static tissue x transmission (S0), vessel pulse shading
                              # (V), local background sources x transmission (B_j)
    neurons: sp.csc_matrix    # (Np, K) footprints + halo x transmission

    @property
    def s0(self) -> np.ndarray:
        return self.dense[0]
    align_map: np.ndarray     # (2, H, W) float32 session-canvas coordinates of reference pixels


class SimulatedAnimal:
    """A simulated animal: ground truth plus deterministic, lazily rendered frames.

    Use :func:`simulate_animal` to build one.
    """

    def __init__(self, config: SimulationConfig, seed: int, ground_truth: GroundTruth, state: dict):
        self.config = config
        self.seed = int(seed)
        self.ground_truth = ground_truth
        self._state = state
        self._cache: dict[int, _Session] = {}

    # ------------------------------------------------------------------ public API
    @property
    def n_sessions(self) -> int:
        return self.ground_truth.n_sessions

    @property
    def shape(self) -> tuple[int, int]:
        """Raw frame shape (H, W)."""
        return self.ground_truth.shape

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the rendered (noisy, quantised) frames."""
        return np.dtype(self.config.dtype)

    def n_frames(self, s: int) -> int:
        """Frames in session ``s``."""
        b = self.ground_truth.session_bounds
        return int(b[s + 1] - b[s])

    def session_frames(self, s: int, start: int = 0, stop: int | None = None, *, noise: bool = True) -> np.ndarray:
        """Raw frames ``start:stop`` of session ``s``, (n, H, W).

        Parameters
        ----------
        noise : if False, return the noise-free expectation ``offset + mean_t`` as float32
            instead of the quantised noisy frames (dtype ``config.dtype``).
        """
        return self._frames(s, start, stop, noise=noise, aligned=False)

    def aligned_frames(self, s: int, start: int = 0, stop: int | None = None, *, noise: bool = True) -> np.ndarray:
        """Session ``s`` rendered in the reference frame without within-session motion, (n, H, W).

        What perfect motion correction plus inter-session alignment would give (before any
        enhancement): the session canvas sampled at ``maps[s]``, with the session's
        illumination at those positions, the same noise model and dtype as :meth:`session_frames`.
        """
        return self._frames(s, start, stop, noise=noise, aligned=True)

    def iter_session(self, s: int, chunk: int = 100, *, noise: bool = True,
                     aligned: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, frames)`` over session ``s`` in chunks of ``chunk`` frames (flat memory)."""
        if chunk < 1:
            raise ConfigError(f"iter_session: chunk={chunk} must be >= 1")
        n = self.n_frames(s)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            yield start, self._frames(s, start, stop, noise=noise, aligned=aligned)

    # ------------------------------------------------------------------ rendering
    def _check_range(self, s: int, start: int, stop: int | None) -> tuple[int, int]:
        if not 0 <= s < self.n_sessions:
            raise IndexError(f"session {s} out of range: the animal has {self.n_sessions} sessions")
        n = self.n_frames(s)
        stop = n if stop is None else int(stop)
        if not 0 <= start <= stop <= n:
            raise IndexError(f"frames {start}:{stop} out of range for session {s} with {n} frames")
        return int(start), stop

    def _frames(self, s: int, start: int, stop: int | None, *, noise: bool, aligned: bool) -> np.ndarray:
        start, stop = self._check_range(s, start, stop)
        h, w = self.shape
        out = np.empty((stop - start, h, w), self.dtype if noise else np.float32)
        for b0 in range((start // BLOCK) * BLOCK, stop, BLOCK):
            b1 = min(b0 + BLOCK, self.n_frames(s))
            block = self._render_block(s, b0, b1, aligned=aligned)
            if noise:
                block = self._add_noise(block, s, b0, aligned)
            else:
                block += np.float32(self.config.offset)
            lo, hi = max(start, b0), min(stop, b1)
            out[lo - start:hi - start] = block[lo - b0:hi - b0]
        return out

    def _session(self, s: int) -> _Session:
        if s not in self._cache:
            self._cache.clear()                 # one session's components at a time
            self._cache[s] = _build_session(self, s)
        return self._cache[s]

    def _render_block(self, s: int, b0: int, b1: int, *, aligned: bool) -> np.ndarray:
        """Noise-free mean frames b0:b1 of session s (DN above offset), (n, H, W) float32."""
        st = self._state
        gt = self.ground_truth
        ses = self._session(s)
        g0 = int(gt.session_bounds[s])
        n = b1 - b0
        tsl = slice(g0 + b0, g0 + b1)
        glob = st["global"][tsl]
        pulse = st["pulse"][tsl]
        loc = st["local_courses"][:, tsl]
        coef = np.empty((n, ses.dense.shape[0]), np.float32)
        coef[:, 0] = 1 + glob
        coef[:, 1] = -pulse
        coef[:, 2:] = loc.T
        canvas = coef @ ses.dense                     # (n, Np) background, one matrix product
        c = gt.C[:, tsl]
        on = np.flatnonzero(c.max(axis=1) > 0)
        if on.size:
            nm = ses.neurons
            _add_neurons(canvas, nm.indptr, nm.indices, nm.data, on, np.ascontiguousarray(c[on]))
        canvas = canvas.astype(np.float32, copy=False).reshape(n, *ses.canvas_shape)
        h, w = self.shape
        out = np.empty((n, h, w), np.float32)
        illum = gt.illumination
        if aligned:
            mx, my = ses.align_map[1], ses.align_map[0]
            illum = st["aligned_illum"][s]
            for i in range(n):                    # one OpenCV remap per frame
                out[i] = cv2.remap(canvas[i], mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        elif gt.wobble_basis.shape[1]:
            yy, xx = np.mgrid[:h, :w].astype(np.float32)
            basis = gt.wobble_basis[s]
            m = ses.margin
            for i in range(n):
                t = b0 + i
                d = gt.motion_concat[g0 + t]
                wob = np.tensordot(gt.wobble_coef[g0 + t], basis, axes=1)      # (2, H, W)
                my = yy + np.float32(m - d[0]) - wob[0]
                mx = xx + np.float32(m - d[1]) - wob[1]
                out[i] = cv2.remap(canvas[i], mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        else:
            m = ses.margin
            for i in range(n):
                d = gt.motion_concat[g0 + b0 + i]
                aff = np.float32([[1, 0, m - d[1]], [0, 1, m - d[0]]])
                out[i] = cv2.warpAffine(canvas[i], aff, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                        borderMode=cv2.BORDER_REPLICATE)
        out *= illum
        np.maximum(out, 0, out=out)
        return out

    def _add_noise(self, mean: np.ndarray, s: int, b0: int, aligned: bool) -> np.ndarray:
        """Poisson-Gaussian noise, dark offset, rounding and clipping to the frame dtype."""
        c = self.config
        tag = _T_ALIGNED_NOISE if aligned else _T_NOISE
        info = np.iinfo(self.dtype)
        out = np.empty(mean.shape, self.dtype)
        for i in range(mean.shape[0]):            # one generator per frame: chunking-independent
            rng = _rng(self.seed, tag, s, b0 + i)
            x = mean[i]
            if c.exact_poisson and c.gain > 0:
                y = np.float32(c.gain) * rng.poisson(x / np.float32(c.gain)).astype(np.float32)
                y += np.float32(c.read_noise) * rng.standard_normal(x.shape, dtype=np.float32)
            else:
                sd = np.sqrt(np.float32(c.gain) * x + np.float32(c.read_noise) ** 2)
                y = x + sd * rng.standard_normal(x.shape, dtype=np.float32)
            y += np.float32(c.offset)
            out[i] = np.clip(np.rint(y), info.min, info.max)
        return out


# ---------------------------------------------------------------------- construction
def _session_inverse_grid(translation: np.ndarray, disp: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference positions (FOV coords) of every session-canvas pixel: p = q - t_s - D_s(q)."""
    hc, wc = disp.shape[1:]
    yy, xx = np.mgrid[:hc, :wc].astype(np.float32)
    py = yy - margin - np.float32(translation[0]) - disp[0]
    px = xx - margin - np.float32(translation[1]) - disp[1]
    return py, px


def _forward_map(points_y: np.ndarray, points_x: np.ndarray, translation: np.ndarray, disp: np.ndarray,
                 margin: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Session positions q of reference points p solving q - t_s - D_s(q) = p (fixed point)."""
    qy = points_y + np.float32(translation[0])
    qx = points_x + np.float32(translation[1])
    for _ in range(iterations):
        dy = anatomy.sample_bilinear(disp[0], qy + margin, qx + margin)
        dx = anatomy.sample_bilinear(disp[1], qy + margin, qx + margin)
        qy = points_y + np.float32(translation[0]) + dy
        qx = points_x + np.float32(translation[1]) + dx
    return qy.astype(np.float32), qx.astype(np.float32)


def _background_course(source: np.ndarray | None, n: int, fps: float, tau: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Unit-std zero-mean slow course (n,): a real recorded course resampled, else a smoothed AR(1)."""
    if source is not None:
        src = (source - source.mean()) / max(float(source.std()), 1e-12)
        step = 15.0 / fps                         # the recorded courses are at 15 Hz
        t = rng.uniform(0, len(src)) + step * np.arange(n)
        out = np.interp(t % (len(src) - 1), np.arange(len(src)), src)
        return out.astype(np.float32)
    phi = np.exp(-1 / (tau * fps))
    x = activity.ar1_process(1, n, phi, rng)[0]
    x = signal.lfilter([1 - phi], [1, -phi], x)    # second pole: smooth random walk
    x = (x - x.mean()) / max(float(x.std()), 1e-12)
    return x.astype(np.float32)


def _real_background_courses(config: SimulationConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    from califlow.errors import InputError

    if config.background_source == "synthetic":
        return None, None
    path = anatomy.shared_data_dir() / "cnmfe_elife_background" / "background.mat"
    if not path.is_file():
        if config.background_source == "real":
            raise InputError(f"background_source='real' but {path} is missing (set CALIFLOW_SHARED_DATA)")
        return None, None
    import scipy.io

    m = scipy.io.loadmat(str(path))
    return np.ravel(m["F_global"]).astype(np.float64), np.ravel(m["F_vessel"]).astype(np.float64)


def simulate_animal(config: SimulationConfig, seed: int = 0) -> SimulatedAnimal:
    """Draw one animal's ground truth; frames are rendered on request.

    Parameters
    ----------
    config : a :class:`SimulationConfig` (e.g. ``preset("demo")``).
    seed : non-negative integer; the same (config, seed) gives identical ground truth and frames.

    Returns
    -------
    SimulatedAnimal with ``.ground_truth`` (:class:`GroundTruth`), ``.session_frames``,
    ``.aligned_frames`` and ``.iter_session``.
    """
    if not isinstance(config, SimulationConfig):
        raise ConfigError(f"simulate_animal: config must be a SimulationConfig, got {type(config).__name__}")
    if int(seed) < 0:
        raise ConfigError(f"simulate_animal: seed={seed} must be >= 0")
    c = config
    h, w, n_s = c.height, c.width, c.n_sessions
    bounds = np.arange(n_s + 1, dtype=np.int64) * c.frames_per_session
    motion, wob_coef, wob_basis, margin, pad = _draw_motion(c, seed, bounds)
    anat = _draw_anatomy(c, seed, pad)
    rates, amps, tau_r, tau_d = _draw_kinetics(c, seed)
    active, spikes, calcium = _draw_activity(c, seed, bounds, rates, amps, tau_r, tau_d)
    glob, pulse, loc_courses, bright, contrast = _draw_background(c, seed, bounds)
    def_centers, def_sigma, def_courses = _draw_defocused(c, seed, bounds)
    translations, disps, maps = _draw_geometry(c, seed, margin)
    state = dict(pad=pad, margin=margin, centers=anat["centers"], patches=anat["patches"],
                 vessels_ref=anat["vessels_ref"], tissue_ref=anat["tissue_ref"],
                 loc_centers=np.concatenate([anat["loc_centers"], def_centers]),
                 loc_sigma=np.concatenate([anat["loc_sigma"], def_sigma]), disps=disps, bright=bright,
                 contrast=contrast, global_=glob, local_courses=np.concatenate([loc_courses, def_courses]),
                 pulse=pulse)
    state["global"] = glob
    centers_ref, ref_csr = _reference_footprints(state, (h, w), margin, c.halo_sigma)
    gt = GroundTruth(
        shape=(h, w), fps=float(c.fps), seed=int(seed), config=c.to_dict(), footprint_source=anat["source_used"],
        centers_ref=centers_ref, footprints_ref_sparse=ref_csr,
        footprints_sparse=sp.csr_matrix((n_s * c.n_neurons, h * w), dtype=np.float32),
        C=calcium, S=spikes, tau_rise=tau_r, tau_decay=tau_d, active=active, session_bounds=bounds,
        motion_concat=motion, translations=translations, maps=maps,
        vessels=anat["vessels_ref"][pad:pad + h, pad:pad + w].copy(),
        vessels_session=np.zeros((n_s, h, w), np.float32), baseline_session=np.zeros((n_s, h, w), np.float32),
        illumination=anat["illum"], wobble_basis=wob_basis, wobble_coef=wob_coef,
        extra={"rates_hz": rates.tolist(), "amplitudes": amps.tolist(), "margin": margin, "pad": pad,
               "defocused_centers": def_centers.tolist(), "defocused_sigma": def_sigma.tolist()})
    animal = SimulatedAnimal(c, seed, gt, state)
    _session_ground_truth_images(animal)
    return animal


def _draw_motion(c: SimulationConfig, seed: int, bounds: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Rigid motion and the wobble of every frame; they fix the canvas margins.

    Returns
    -------
    motion : ndarray (T, 2) float
        Rigid shift per frame (px), sessions concatenated.
    wob_coef : float32 (T, n_wob)
        Wobble coefficients per frame (``n_wob`` = 0 without wobble).
    wob_basis : float32 (n_sessions, n_wob, 2, h, w)
        Smooth displacement fields (px) per session.
    margin : int
        Canvas margin (px) covering the largest motion plus wobble.
    pad : int
        Reference-anatomy margin (px): ``margin`` plus the inter-session translation and deformation.
    """
    h, w, n_s, t_s = c.height, c.width, c.n_sessions, c.frames_per_session
    motion = np.concatenate([activity.rigid_motion(t_s, std=c.motion_std, phi=c.motion_phi, n_jumps=c.n_jumps,
                                                   jump_max=c.jump_max, rng=_rng(seed, _T_MOTION, s))
                             for s in range(n_s)])
    n_wob = _WOBBLE_FIELDS if c.wobble > 0 else 0
    wob_coef = np.zeros((n_s * t_s, n_wob), np.float32)
    wob_basis = np.zeros((n_s, n_wob, 2, h, w), np.float32)
    if n_wob:
        for s in range(n_s):
            r = _rng(seed, _T_WOBBLE, s)
            wob_coef[bounds[s]:bounds[s + 1]] = (activity.ar1_process(n_wob, t_s, np.exp(-1 / (3.0 * c.fps)), r).T
                                                 * np.float32(c.wobble / np.sqrt(n_wob)))
            for j in range(n_wob):
                wob_basis[s, j] = anatomy.smooth_displacement((h, w), c.wobble_scale, 1.0, r)
    margin = int(np.ceil(np.abs(motion).max() + (np.abs(wob_coef).sum(axis=1).max() if n_wob else 0) + 4))
    pad = margin + int(np.ceil(c.translation + c.deformation + 4))
    return motion, wob_coef, wob_basis, margin, pad


def _draw_anatomy(c: SimulationConfig, seed: int, pad: int) -> dict:
    """The reference anatomy, on a canvas ``pad`` px larger than the field of view on each side.

    Returns a dict: ``centers`` (k, 2) px, ``patches`` and ``source_used`` (footprint shapes and
    their source), ``vessels_ref`` and ``tissue_ref`` float32 (h + 2 pad, w + 2 pad),
    ``illum`` float32 (h, w) (vignetting), ``loc_centers`` (n_local, 2) px and ``loc_sigma``
    (n_local,) px of the local background sources.
    """
    h, w, k = c.height, c.width, c.n_neurons
    centers = anatomy.place_centers(k, h, w, margin=c.edge_margin, min_spacing=c.min_spacing,
                                    rng=_rng(seed, _T_CENTERS))
    patches, source_used = anatomy.footprint_patches(
        k, diameter=c.neuron_diameter, size_jitter=c.size_jitter, source=c.footprint_source,
        bank=c.footprint_bank, dendrite_weight=c.dendrite_weight, rng=_rng(seed, _T_SHAPES))
    ref_shape = (h + 2 * pad, w + 2 * pad)
    vessels_ref = anatomy.draw_vessels(ref_shape, c.n_vessels, c.vessel_width, _rng(seed, _T_VESSELS)) \
        if c.n_vessels > 0 else np.zeros(ref_shape, np.float32)
    r_tex = _rng(seed, _T_TEXTURE)
    tex = 0.7 * anatomy.smooth_noise(ref_shape, 2.5 * c.neuron_diameter, r_tex) \
        + 0.7 * anatomy.smooth_noise(ref_shape, 0.5 * c.neuron_diameter, r_tex)
    tissue_ref = (c.baseline * np.clip(1 + c.texture * tex, 0.2, None)).astype(np.float32)
    illum = anatomy.illumination((h, w), c.vignetting, _rng(seed, _T_ILLUM))
    r_loc = _rng(seed, _T_LOCAL)
    n_loc = c.n_local_sources
    loc_centers = r_loc.uniform([-0.1 * h, -0.1 * w], [1.1 * h, 1.1 * w], (n_loc, 2))
    loc_sigma = c.local_sigma * r_loc.uniform(0.7, 1.3, n_loc)
    return dict(centers=centers, patches=patches, source_used=source_used, vessels_ref=vessels_ref,
                tissue_ref=tissue_ref, illum=illum, loc_centers=loc_centers, loc_sigma=loc_sigma)


def _draw_kinetics(c: SimulationConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per neuron (k,): firing rate (Hz), spike amplitude, rise and decay time constants (s, float32;
    rise at most 0.8 decay)."""
    k = c.n_neurons
    r_rate = _rng(seed, _T_RATES)
    rates, amps = _rates_and_amplitudes(c, k, c.amplitude, r_rate)
    tau_r = (c.tau_rise * np.clip(1 + c.tau_jitter * r_rate.standard_normal(k), 0.5, 1.5)).astype(np.float32)
    tau_d = (c.tau_decay * np.clip(1 + c.tau_jitter * r_rate.standard_normal(k), 0.5, 1.5)).astype(np.float32)
    tau_r = np.minimum(tau_r, 0.8 * tau_d)
    return rates, amps, tau_r, tau_d


def _rates_and_amplitudes(c: SimulationConfig, n: int, amplitude: float, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per source (n,): log-normal event rate (Hz, clipped to the configured range) and median
    event amplitude around ``amplitude`` (rates drawn first, then amplitudes)."""
    rates = np.clip(c.rate_hz * np.exp(c.rate_spread * rng.standard_normal(n)), c.rate_min_hz, c.rate_max_hz)
    return rates, amplitude * np.exp(c.amplitude_spread * rng.standard_normal(n))


def _draw_activity(c: SimulationConfig, seed: int, bounds: np.ndarray, rates: np.ndarray, amps: np.ndarray,
                   tau_r: np.ndarray, tau_d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which neurons are active in which session (turnover), their spikes and calcium.

    Every neuron is active in its own session (neurons are dealt round-robin over the sessions)
    and in each other one with probability ``overlap``; every active neuron fires at least once.

    Returns
    -------
    active : bool (k, n_sessions)
    spikes, calcium : float32 (k, T)
        Sessions concatenated (spike amplitudes and calcium in the units of ``amplitude``).
    """
    k, n_s, t_s = c.n_neurons, c.n_sessions, c.frames_per_session
    r_turn = _rng(seed, _T_TURNOVER)
    own = np.empty(k, np.int64)
    own[r_turn.permutation(k)] = np.arange(k) % n_s
    active = r_turn.random((k, n_s)) < c.overlap
    active[np.arange(k), own] = True
    spikes = np.zeros((k, n_s * t_s), np.float32)
    calcium = np.zeros((k, n_s * t_s), np.float32)
    for s in range(n_s):
        r_sp = _rng(seed, _T_SPIKES, s)
        sp_s = activity.spike_trains(k, t_s, c.fps, rate_hz=rates, amplitude=amps, event_jitter=c.event_jitter,
                                     correlation=c.correlation, rng=r_sp)
        silent = np.flatnonzero(active[:, s] & (sp_s.max(axis=1) <= 0))
        if silent.size:                                   # every active neuron fires at least once
            frames = r_sp.integers(0, max(1, t_s - int(2 * c.fps)), silent.size)
            sp_s[silent, frames] = amps[silent]
        sp_s[~active[:, s]] = 0
        spikes[:, bounds[s]:bounds[s + 1]] = sp_s
        calcium[:, bounds[s]:bounds[s + 1]] = activity.calcium_traces(sp_s, tau_r, tau_d, c.fps)
    return active, spikes, calcium


def _draw_background(c: SimulationConfig, seed: int, bounds: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Background time courses (sessions concatenated) and per-session brightness and vessel contrast.

    Returns
    -------
    glob, pulse : float32 (T,)
        Global fluctuation and vessel pulsation.
    loc_courses : float32 (n_local, T)
        Local background sources.
    bright, contrast : ndarray (n_sessions,)
        Baseline brightness factor and vessel contrast of each session (session 0: 1 and ``vessels``).
    """
    n_s, t_s, n_loc = c.n_sessions, c.frames_per_session, c.n_local_sources
    real_global, real_vessel = _real_background_courses(c)
    glob = np.zeros(n_s * t_s, np.float32)
    pulse = np.zeros(n_s * t_s, np.float32)
    loc_courses = np.zeros((n_loc, n_s * t_s), np.float32)
    bright = np.ones(n_s)
    contrast = np.full(n_s, c.vessels)
    for s in range(n_s):
        r_bg = _rng(seed, _T_BG, s)
        sl = slice(bounds[s], bounds[s + 1])
        glob[sl] = c.global_fluct * _background_course(real_global, t_s, c.fps, c.background_tau * 3, r_bg)
        pulse[sl] = c.vessel_pulse * _background_course(real_vessel, t_s, c.fps, c.background_tau, r_bg)
        for j in range(n_loc):
            loc_courses[j, sl] = c.local_amp * _background_course(None, t_s, c.fps, c.background_tau, r_bg)
        r_ses = _rng(seed, _T_SESSION, s)
        if s > 0:
            bright[s] = 1 + c.session_baseline_change * r_ses.standard_normal()
            contrast[s] = np.clip(c.vessels * (1 + c.session_vessel_change * r_ses.standard_normal()), 0, 1)
    return glob, pulse, loc_courses, bright, contrast


def _draw_defocused(c: SimulationConfig, seed: int, bounds: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-focus cells: Gaussian blobs in the tissue whose light follows calcium transients.

    They are part of the background (not neurons to find): what a 1p microscope sees of cells
    above and below the focal plane.  Each is active in every session, with the neurons' rate
    distribution and kinetics.

    Returns
    -------
    centers : (n, 2) float, reference-frame px;  sigma : (n,) px (``defocus_sigma`` neuron
    diameters, +-25 %);  courses : float32 (n, T), DN at the blob peak.
    """
    n, t_s = c.n_defocused, c.frames_per_session
    r = _rng(seed, _T_DEFOCUS)
    centers = r.uniform([0.0, 0.0], [c.height, c.width], (n, 2))
    sigma = c.defocus_sigma * c.neuron_diameter * r.uniform(0.8, 1.25, n)
    rates, amps = _rates_and_amplitudes(c, n, c.defocus_amplitude * c.amplitude, r)
    tau_r, tau_d = np.full(n, c.tau_rise, np.float32), np.full(n, c.tau_decay, np.float32)
    courses = np.zeros((n, int(bounds[-1])), np.float32)
    for s in range(c.n_sessions):
        sp_s = activity.spike_trains(n, t_s, c.fps, rate_hz=rates, amplitude=amps, event_jitter=c.event_jitter,
                                     correlation=c.correlation, rng=_rng(seed, _T_DEFOCUS, s + 1))
        courses[:, bounds[s]:bounds[s + 1]] = activity.calcium_traces(sp_s, tau_r, tau_d, c.fps)
    return centers, sigma, courses


def _draw_geometry(c: SimulationConfig, seed: int, margin: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Inter-session geometry: session 0 is the reference.

    Returns
    -------
    translations : float32 (n_sessions, 2)
        Rigid translation (px) of each session.
    disps : list of float32 (2, h + 2 margin, w + 2 margin)
        Smooth deformation (px) of each session on the canvas.
    maps : float32 (n_sessions, 2, h, w)
        Where each field-of-view pixel of the reference lies in the session (px, ``(y, x)``).
    """
    h, w, n_s = c.height, c.width, c.n_sessions
    canvas_shape = (h + 2 * margin, w + 2 * margin)
    translations = np.zeros((n_s, 2), np.float32)
    disps = []
    for s in range(n_s):
        r_ses = _rng(seed, _T_SESSION, s, 1)
        if s == 0:
            disps.append(np.zeros((2, *canvas_shape), np.float32))
            continue
        ang = r_ses.uniform(0, 2 * np.pi)
        mag = c.translation * r_ses.uniform(0.5, 1.0)
        translations[s] = (mag * np.sin(ang), mag * np.cos(ang))
        disps.append(anatomy.smooth_displacement(canvas_shape, c.deformation_scale, c.deformation, r_ses))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    maps = np.empty((n_s, 2, h, w), np.float32)
    for s in range(n_s):
        maps[s] = _forward_map(yy, xx, translations[s], disps[s], margin)
    return translations, disps, maps


def _reference_footprints(state: dict, fov: tuple[int, int], margin: int, halo_sigma: float
                          ) -> tuple[np.ndarray, sp.csr_matrix]:
    """Reference footprints (shape only) and their centroids.

    Centroids come from the uncropped canvas (exact even at the edge of the field of view).

    Returns
    -------
    centers_ref : ndarray (k, 2)
        Centroid ``(y, x)`` of each footprint, px in the field of view.
    ref_csr : csr_matrix (k, h * w)
        The footprints cropped to the field of view.
    """
    h, w = fov
    hc, wc = h + 2 * margin, w + 2 * margin
    ref_canvas = sp.csr_matrix(_neuron_matrix(state, (h, w), translation=np.zeros(2, np.float32),
                                              disp=np.zeros((2, hc, wc), np.float32),
                                              margin=margin, halo=0.0, halo_sigma=halo_sigma,
                                              crop_to_fov=False).T)
    mass = np.asarray(ref_canvas.sum(axis=1)).ravel()
    flat_y = np.repeat(np.arange(hc, dtype=np.float64) - margin, wc)
    flat_x = np.tile(np.arange(wc, dtype=np.float64) - margin, hc)
    centers_ref = np.stack([ref_canvas @ flat_y, ref_canvas @ flat_x], axis=1) / np.maximum(mass, 1e-12)[:, None]
    fov_idx = ((np.arange(h)[:, None] + margin) * wc + (np.arange(w)[None, :] + margin)).ravel()
    return centers_ref, ref_canvas[:, fov_idx].tocsr()


def _session_ground_truth_images(animal: SimulatedAnimal) -> None:
    """Fill the per-session ground truth of ``animal`` in place: baseline, vessel image and footprints
    (as each session sees them: illumination and vessel shading applied) of every session, and the
    illumination of every session in the reference frame (``state['aligned_illum']``)."""
    gt, state, c = animal.ground_truth, animal._state, animal.config
    (h, w), margin, n_s = gt.shape, state["margin"], c.n_sessions
    illum, translations, maps, disps = gt.illumination, gt.translations, gt.maps, state["disps"]
    fov = (slice(margin, margin + h), slice(margin, margin + w))
    fps_rows = []
    aligned_illum = np.empty((n_s, h, w), np.float32)
    for s in range(n_s):
        ses = animal._session(s)
        gt.baseline_session[s] = illum * ses.s0.reshape(h + 2 * margin, w + 2 * margin)[fov]
        py, px = _session_inverse_grid(translations[s], disps[s], margin)
        gt.vessels_session[s] = cv2.remap(state["vessels_ref"], px + state["pad"], py + state["pad"],
                                          cv2.INTER_LINEAR)[fov]
        soma = _neuron_matrix(state, (h, w), translation=translations[s], disp=disps[s], margin=margin,
                              halo=0.0, halo_sigma=c.halo_sigma, crop_to_fov=True)
        trans = (1 - state["contrast"][s] * gt.vessels_session[s]).ravel()
        fps_rows.append(sp.csr_matrix(soma.multiply((illum.ravel() * trans)[:, None]).T))
        aligned_illum[s] = cv2.remap(illum, maps[s, 1], maps[s, 0], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gt.footprints_sparse = sp.vstack(fps_rows).tocsr().astype(np.float32)
    state["aligned_illum"] = aligned_illum


def _neuron_matrix(state: dict, fov: tuple[int, int], *, translation: np.ndarray, disp: np.ndarray, margin: int,
                   halo: float, halo_sigma: float, crop_to_fov: bool) -> sp.csc_matrix:
    """Footprints (plus ``halo`` x their blur) deformed into a session frame, sparse (Np, K).

    ``crop_to_fov``: pixels of the (H, W) FOV (Np = H*W); else of the session canvas with
    ``margin`` (Np = (H+2m)(W+2m)).
    """
    h, w = fov
    patches, centers = state["patches"], state["centers"]
    k, ps = patches.shape[0], patches.shape[1]
    hp = int(np.ceil(3 * halo_sigma)) if halo > 0 else 0
    off = 0 if crop_to_fov else margin
    out_h, out_w = h + 2 * off, w + 2 * off
    cy, cx = _forward_map(centers[:, 0].astype(np.float32), centers[:, 1].astype(np.float32), translation, disp, margin)
    half = (ps - 1) // 2 + hp + int(np.ceil(np.abs(disp).max())) + 2
    rows, cols, vals = [], [], []
    big = ps + 2 * hp
    for i in range(k):                         # loop over neurons
        patch = patches[i]
        if hp:
            patch = np.pad(patch, hp)
            patch = patch + np.float32(halo) * _normalised_blur(patch, halo_sigma)
        # session-frame window around the mapped centre (FOV coords)
        y0, x0 = int(np.floor(cy[i])) - half, int(np.floor(cx[i])) - half
        wy, wx = np.mgrid[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1].astype(np.float32)
        # reference position of each window pixel: p = q - t - D(q)
        dy = anatomy.sample_bilinear(disp[0], wy + margin, wx + margin)
        dx = anatomy.sample_bilinear(disp[1], wy + margin, wx + margin)
        py = wy - np.float32(translation[0]) - dy
        px = wx - np.float32(translation[1]) - dx
        # patch coordinates: the patch centre sits at the neuron centre
        c0 = (big - 1) / 2
        my = (py - centers[i, 0] + c0).astype(np.float32)
        mx = (px - centers[i, 1] + c0).astype(np.float32)
        # exact cubic-spline sampling (cv2.remap quantises coordinates to 1/32 px)
        vals_i = ndimage.map_coordinates(patch, [my, mx], order=3, mode="constant", cval=0.0).astype(np.float32)
        oy, ox = wy.astype(np.int64) + off, wx.astype(np.int64) + off
        keep = (vals_i > 1e-4) & (oy >= 0) & (oy < out_h) & (ox >= 0) & (ox < out_w)
        rows.append(oy[keep] * out_w + ox[keep])
        cols.append(np.full(int(keep.sum()), i))
        vals.append(vals_i[keep])
    return sp.csc_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(out_h * out_w, k))


@numba.njit(cache=True)
def _add_neurons(canvas, indptr, indices, data, neurons, courses):
    """canvas[i, p] += sum over neurons a of A[p, neurons[a]] * courses[a, i] (CSC A, in place)."""
    for i in range(canvas.shape[0]):
        row = canvas[i]
        for a in range(neurons.size):
            ck = courses[a, i]
            if ck == 0:
                continue
            k = neurons[a]
            for idx in range(indptr[k], indptr[k + 1]):
                row[indices[idx]] += data[idx] * ck


def _normalised_blur(patch: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``patch`` scaled to peak 1 (the halo shape)."""
    b = cv2.GaussianBlur(patch, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return b / max(float(b.max()), 1e-12)


def _build_session(animal: SimulatedAnimal, s: int) -> _Session:
    """Session-canvas components of session ``s`` (see the module docstring)."""
    st = animal._state
    c = animal.config
    gt = animal.ground_truth
    h, w = animal.shape
    margin, pad = st["margin"], st["pad"]
    disp = st["disps"][s]
    translation = gt.translations[s]
    canvas_shape = disp.shape[1:]
    py, px = _session_inverse_grid(translation, disp, margin)
    vessel = cv2.remap(st["vessels_ref"], px + pad, py + pad, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    tissue = cv2.remap(st["tissue_ref"], px + pad, py + pad, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    tissue *= np.float32(st["bright"][s])
    trans = 1 - np.float32(st["contrast"][s]) * vessel
    s0 = (trans * tissue).ravel()
    vessel_term = (np.float32(st["contrast"][s]) * vessel * tissue).ravel()
    n_loc = len(st["loc_sigma"])
    local = np.empty((n_loc, s0.size), np.float32)
    for j in range(n_loc):                     # loop over background sources
        cy, cx = st["loc_centers"][j]
        r2 = (py - np.float32(cy)) ** 2 + (px - np.float32(cx)) ** 2
        local[j] = (np.exp(-r2 / np.float32(2 * st["loc_sigma"][j] ** 2)) * trans).ravel()
    neurons = _neuron_matrix(st, (h, w), translation=translation, disp=disp, margin=margin, halo=c.halo_weight,
                             halo_sigma=c.halo_sigma, crop_to_fov=False)
    neurons = sp.csc_matrix(neurons.multiply(trans.ravel()[:, None])).astype(np.float32)
    align = gt.maps[s] + np.float32(margin)
    dense = np.concatenate([s0[None], vessel_term[None], local]).astype(np.float32)
    return _Session(margin=margin, canvas_shape=canvas_shape, dense=dense, neurons=neurons,
                    align_map=align.astype(np.float32))
