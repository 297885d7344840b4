"""Rigid (translation) motion correction against a template built from the data.

Each frame is turned into a *reference image* that moves with the tissue: its blood-vessel
image (``'BV'``: vesselness of the frame after dividing out the session's static
vignetting) or its MIN1PIPE-enhanced neurons (``'neuron'``). A frame's shift is found in
two steps:

1. integer search: FFT cross-correlation of the apodised (cosine-tapered border) reference
   image with the template, maximised over ``|dy|, |dx| <= max_shift``; a parabola through
   the peak's neighbours gives a first sub-pixel estimate;
2. sub-pixel refinement: Gauss-Newton (inverse-compositional Lucas-Kanade) steps on the
   frame warped by cubic interpolation, with a per-frame gain, over the template's interior;
   the normalised correlation with the template is the frame's *quality*.

The template is deterministic: the median of the reference images of evenly spaced frames,
then ``template_iterations`` times the median of those images registered to the previous
template. Frames whose quality is below ``min_quality_ratio`` times the median quality
(featureless, dropped or corrupted frames), or whose peak sits on the search bound, are
outliers (unless they match as well as typical frames): their shifts are interpolated in
time from the neighbouring good frames, so a blank frame never produces a jump. The
refinement may carry a shift up to about 2 px beyond ``max_shift``. Shifts are finally
re-centred on their median (the template's offset is returned) and follow
``raw_t(p + d_t) = corrected_t(p)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.fft

from califlow.errors import InputError
from califlow.motion.options import MotionOptions, motion_options
from califlow.motion.vessels import bv_scales, vesselness, vignetting_background
from califlow.motion.warp import translate_stack
from califlow.preprocess.filters import gaussian_blur_stack

__all__ = ["CAUCHY_SCALE_PER_MEAN_ABS_ERROR", "ReferenceMaker", "TemplateMatcher", "RigidMotion",
           "estimate_rigid_motion", "repair_outliers", "sample_indices", "read_frames"]

log = logging.getLogger("califlow")

#: Hessian scales used for the per-frame BV reference (the session's BV projection uses 10);
#: 2 scales (the ends of BVsize) register as accurately as 3 on the simulator, at 2/3 the cost.
FRAME_BV_SCALES = 2
_MATCH_BATCH = 50


def sample_indices(n_frames: int, n_samples: int) -> np.ndarray:
    """``min(n_frames, n_samples)`` evenly spaced frame indices (deterministic, sorted, unique)."""
    n = max(1, min(int(n_frames), int(n_samples)))
    return np.unique(np.round(np.linspace(0, n_frames - 1, n)).astype(np.int64))


def read_frames(movie, index) -> np.ndarray:
    """Frames ``movie[index]`` (a slice or an array of indices) of a NumPy or Zarr array, float32."""
    if isinstance(index, slice) or not hasattr(movie, "get_orthogonal_selection"):
        return np.asarray(movie[index], dtype=np.float32)
    return np.asarray(movie.get_orthogonal_selection((np.asarray(index), slice(None), slice(None))),
                      dtype=np.float32)


class ReferenceMaker:
    """Turn raw frames into the images that are registered.

    ``'BV'``: multi-scale vesselness (``FRAME_BV_SCALES`` scales over ``BVsize``) of the frame
    divided by the session's static illumination (the vignetting of the median of
    ``sample``; it is fixed to the sensor, so it must not take part in the registration).
    ``'neuron'``: a neuron-scale band-pass of the illumination-corrected frame, the
    difference of Gaussians of sigma ``0.4 gSig`` and ``1.6 gSig`` px, which keeps cell- and
    texture-sized structure and removes the wide background (the MIN1PIPE top-hat was tried
    and registered worse: at rest neurons are dim, so firing cells dominate it).

    Parameters
    ----------
    kind : {'BV', 'neuron'}
    sample : ndarray, shape (n, H, W)
        Raw frames spread over the session.
    bv_size : (float, float)
        Vessel scale range, px.
    gsig : float
        Neuron size parameter, px.
    """

    def __init__(self, kind: str, sample: np.ndarray, bv_size, gsig: float):
        if kind not in ("BV", "neuron"):
            raise ValueError(f"reference_projection_rigid must be 'BV' or 'neuron', got {kind!r}")
        self.kind = kind
        self.gsig = float(gsig)
        self.sigmas = bv_scales(bv_size, FRAME_BV_SCALES)
        median = np.median(sample, axis=0).astype(np.float32)
        bg = vignetting_background(median)
        eps = max(float(np.abs(bg).max()), 1.0) * 1e-6
        self.inv_background = (1.0 / np.maximum(bg, eps)).astype(np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        flat = np.asarray(frames, dtype=np.float32) * self.inv_background
        if self.kind == "BV":
            return vesselness(flat, self.sigmas)
        fine = gaussian_blur_stack(flat, 0.4 * self.gsig)
        fine -= gaussian_blur_stack(flat, 1.6 * self.gsig)
        return fine


def _taper(n: int, border: int) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    b = min(border, n // 2)
    if b > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(b) + 0.5) / b)
        w[:b] = ramp
        w[n - b:] = ramp[::-1]
    return w


#: Cauchy scale per unit mean absolute residual, ``c = CAUCHY_SCALE_PER_MEAN_ABS_ERROR * mean|e|``:
#: 2.385 is the Cauchy tuning constant (c = 2.385 sigma gives 95 % efficiency under Gaussian
#: noise) and 1.25 converts a mean absolute Gaussian residual to its sigma (sqrt(pi / 2)).
CAUCHY_SCALE_PER_MEAN_ABS_ERROR = 2.385 * 1.25
_LK_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(cache=True, nogil=True, fastmath=_LK_FASTMATH, inline="always")
def _rect_moments(frame, template, i0, i1, j0, j1):
    """Sums over the rectangle ``[i0, i1) x [j0, j1)`` of a frame W and the template T (h, w).

    Returns ``(sum W, sum T, sum W**2, sum T**2, sum W T)`` as float64, accumulated per row in
    float32 (reassociated, so the row loops vectorise).
    """
    sw = st = sww = stt = swt = 0.0
    for i in range(i0, i1):
        wr = frame[i, j0:j1]
        tr = template[i, j0:j1]
        a_w = a_t = a_ww = a_tt = a_wt = np.float32(0.0)
        for j in range(j1 - j0):
            v = wr[j]
            u = tr[j]
            a_w += v
            a_t += u
            a_ww += v * v
            a_tt += u * u
            a_wt += v * u
        sw, st, sww, stt, swt = sw + a_w, st + a_t, sww + a_ww, stt + a_tt, swt + a_wt
    return sw, st, sww, stt, swt


@numba.njit(cache=True, nogil=True, fastmath=_LK_FASTMATH, inline="always")
def _sum_abs_residual(frame, template, i0, i1, j0, j1, gain, frame_mean, template_mean):
    """``sum |e|`` over the rectangle with ``e = gain (W - frame_mean) - (T - template_mean)`` (float32 inputs)."""
    sae = 0.0
    for i in range(i0, i1):
        wr = frame[i, j0:j1]
        tr = template[i, j0:j1]
        a = np.float32(0.0)
        for j in range(j1 - j0):
            a += abs(gain * (wr[j] - frame_mean) - (tr[j] - template_mean))
        sae += a
    return sae


@numba.njit(cache=True, nogil=True, fastmath=_LK_FASTMATH, inline="always")
def _gauss_newton_sums(frame, template, gy, gx, i0, i1, j0, j1, gain, frame_mean, template_mean,
                       robust, inv_c2):
    """Weighted Gauss-Newton sums over the rectangle: ``(b_y, b_x, h_yy, h_xx, h_xy)``.

    ``b = sum w g e`` and ``h = sum w g g'`` with ``g = (gy, gx)`` the template's gradient,
    ``e = gain (W - frame_mean) - (T - template_mean)`` and, with ``robust``, the Cauchy weight
    ``w = 1 / (1 + e**2 inv_c2)`` (else ``w = 1``).
    """
    by = bx = hyy = hxx = hxy = 0.0
    for i in range(i0, i1):
        wr = frame[i, j0:j1]
        tr = template[i, j0:j1]
        ga = gy[i, j0:j1]
        gb = gx[i, j0:j1]
        a_by = a_bx = a_yy = a_xx = a_xy = np.float32(0.0)
        for j in range(j1 - j0):
            e = gain * (wr[j] - frame_mean) - (tr[j] - template_mean)
            wt = np.float32(1.0) / (np.float32(1.0) + e * e * inv_c2) if robust else np.float32(1.0)
            a = ga[j]
            b = gb[j]
            a_by += wt * a * e
            a_bx += wt * b * e
            a_yy += wt * a * a
            a_xx += wt * b * b
            a_xy += wt * a * b
        by, bx, hyy, hxx, hxy = by + a_by, bx + a_bx, hyy + a_yy, hxx + a_xx, hxy + a_xy
    return by, bx, hyy, hxx, hxy


@numba.njit(cache=True, parallel=True, nogil=True, fastmath=_LK_FASTMATH, inline="always")
def _lk_sums(warped, template, gy, gx, rects, robust, out):
    """Per frame: normalised correlation with the template and the Gauss-Newton system.

    Over the rectangle ``rects[n] = (i0, i1, j0, j1)`` (the template's interior where the warped
    frame is defined): the frame is matched to the template in mean and energy,
    ``e = gain (W - mean W) - (T - mean T)``; with ``robust`` each pixel is weighted by the
    Cauchy weight ``1 / (1 + e**2 / c**2)``, ``c = CAUCHY_SCALE_PER_MEAN_ABS_ERROR mean|e|``.
    ``out[n] = (ncc, b_y, b_x, h_yy, h_xx, h_xy, count)`` with ``b = sum w g e``, ``h = sum w g g'``.
    """
    for t in numba.prange(warped.shape[0]):
        i0, i1, j0, j1 = rects[t, 0], rects[t, 1], rects[t, 2], rects[t, 3]
        cnt = float(max(i1 - i0, 0) * max(j1 - j0, 0))
        out[t, 6] = cnt
        if cnt < 2:
            for k in range(6):
                out[t, k] = 0.0
            out[t, 0] = np.nan
            continue
        sw, st, sww, stt, swt = _rect_moments(warped[t], template, i0, i1, j0, j1)
        mw = sw / cnt
        mt = st / cnt
        vw = max(sww - cnt * mw * mw, 0.0)
        vt = max(stt - cnt * mt * mt, 0.0)
        den = math.sqrt(vw * vt)
        out[t, 0] = (swt - cnt * mw * mt) / den if den > 0 else np.nan
        gain = np.float32(math.sqrt(vt / vw) if vw > 0 else 0.0)
        fmw = np.float32(mw)
        fmt = np.float32(mt)
        inv_c2 = np.float32(0.0)
        if robust:
            sae = _sum_abs_residual(warped[t], template, i0, i1, j0, j1, gain, fmw, fmt)
            c = CAUCHY_SCALE_PER_MEAN_ABS_ERROR * sae / cnt
            inv_c2 = np.float32(1.0 / (c * c) if c > 0 else 1e24)
        by, bx, hyy, hxx, hxy = _gauss_newton_sums(warped[t], template, gy, gx, i0, i1, j0, j1, gain, fmw, fmt,
                                                   robust, inv_c2)
        out[t, 1] = by
        out[t, 2] = bx
        out[t, 3] = hyy
        out[t, 4] = hxx
        out[t, 5] = hxy
    return out


class TemplateMatcher:
    """Estimate the translation of reference images against one template.

    Parameters
    ----------
    template : ndarray, shape (h, w)
        Reference image of the template.
    max_shift : float
        Largest shift searched, px (capped below half the frame).
    border : int, optional
        Width (px) of the cosine taper and of the margin excluded from the refinement;
        default ``round(min(h, w) / 10)`` (CaliAli crops d/10 before registering).
    n_iter : int
        Gauss-Newton refinement steps.
    """

    def __init__(self, template: np.ndarray, max_shift: float, border: int | None = None,
                 n_iter: int = 2, robust: bool = True):
        t = np.nan_to_num(np.asarray(template, dtype=np.float32))
        h, w = t.shape
        self.shape = (h, w)
        self.border = int(border if border is not None else max(2, round(min(h, w) / 10)))
        self.max_shift = int(max(1, min(math.floor(max_shift), h // 2 - 1, w // 2 - 1)))
        self.n_iter = int(n_iter)
        self.robust = bool(robust)
        self.window = np.outer(_taper(h, self.border), _taper(w, self.border))
        tz = (t - np.sum(t * self.window) / np.sum(self.window)) * self.window
        # zero-padded to a fast FFT size (the taper makes the borders 0, so padding only
        # removes wrap-around; the correlation at shifts within max_shift is unchanged)
        self.fft_shape = (scipy.fft.next_fast_len(h, real=True), scipy.fft.next_fast_len(w, real=True))
        self.spectrum = np.conj(scipy.fft.rfft2(tz, s=self.fft_shape))
        self.template = t
        gy, gx = np.gradient(t)
        self.gy = gy.astype(np.float32)
        self.gx = gx.astype(np.float32)
        self.inner_border = min(self.border, h // 4, w // 4)
        m = self.max_shift
        self._rows = np.arange(-m, m + 1) % self.fft_shape[0]
        self._cols = np.arange(-m, m + 1) % self.fft_shape[1]

    def _integer_search(self, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = stack.shape[0]
        wsum = np.sum(self.window)
        mean = np.einsum("nij,ij->n", stack, self.window) / wsum
        z = (stack - mean[:, None, None].astype(np.float32)) * self.window
        corr = scipy.fft.irfft2(scipy.fft.rfft2(z, s=self.fft_shape, workers=-1) * self.spectrum,
                                s=self.fft_shape, workers=-1)
        sub = corr[:, self._rows][:, :, self._cols]
        m = self.max_shift
        k = np.argmax(sub.reshape(n, -1), axis=1)
        iy, ix = np.divmod(k, 2 * m + 1)
        at_bound = (iy == 0) | (iy == 2 * m) | (ix == 0) | (ix == 2 * m)
        frac = np.zeros((n, 2))
        ok = ~at_bound
        if np.any(ok):
            r = np.arange(n)[ok]
            c0 = sub[r, iy[ok], ix[ok]]
            for axis, (lo, hi) in enumerate((
                    (sub[r, iy[ok] - 1, ix[ok]], sub[r, iy[ok] + 1, ix[ok]]),
                    (sub[r, iy[ok], ix[ok] - 1], sub[r, iy[ok], ix[ok] + 1]))):
                den = lo - 2 * c0 + hi
                with np.errstate(divide="ignore", invalid="ignore"):
                    f = np.where(den < 0, 0.5 * (lo - hi) / den, 0.0)
                frac[ok, axis] = np.clip(f, -0.5, 0.5)
        shifts = np.stack([iy - m, ix - m], axis=1).astype(np.float64) + frac
        return shifts, at_bound

    def _refine(self, stack: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        quality = np.full(len(stack), np.nan)
        sums = np.empty((len(stack), 7))
        h, w = self.shape
        b = self.inner_border
        for _ in range(max(1, self.n_iter)):
            warped = translate_stack(stack, shifts, order=3, fill=np.nan)
            # the interior where the warped frame is defined: p + d inside [0, h - 1] x [0, w - 1]
            rects = np.empty((len(stack), 4), dtype=np.int64)
            rects[:, 0] = np.maximum(b, np.ceil(-1e-6 - shifts[:, 0]))
            rects[:, 1] = np.minimum(h - b, np.floor(h - 1 + 1e-6 - shifts[:, 0]) + 1)
            rects[:, 2] = np.maximum(b, np.ceil(-1e-6 - shifts[:, 1]))
            rects[:, 3] = np.minimum(w - b, np.floor(w - 1 + 1e-6 - shifts[:, 1]) + 1)
            _lk_sums(warped, self.template, self.gy, self.gx, rects, self.robust, sums)
            quality, b_y, b_x, h_yy, h_xx, h_xy, cnt = sums.T
            good = cnt > 16
            det = h_yy * h_xx - h_xy ** 2
            with np.errstate(divide="ignore", invalid="ignore"):
                step_y = np.where(det > 0, (h_xx * b_y - h_xy * b_x) / det, 0.0)
                step_x = np.where(det > 0, (h_yy * b_x - h_xy * b_y) / det, 0.0)
            step = np.stack([step_y, step_x], axis=1)
            step = np.where(good[:, None] & np.isfinite(step), np.clip(step, -1.0, 1.0), 0.0)
            shifts = shifts - step
            quality = np.where(good, quality, np.nan)
        return shifts, quality

    def match(self, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shifts of reference images relative to the template.

        Parameters
        ----------
        stack : ndarray, shape (n, h, w)

        Returns
        -------
        shifts : ndarray (n, 2) float64
            ``(dy, dx)`` px with ``frame(p + d) ~ template(p)``.
        quality : ndarray (n,) float64
            Normalised correlation with the template after alignment (NaN: not measurable).
        at_bound : ndarray (n,) bool
            The correlation peak lies on the ``max_shift`` bound.
        """
        stack = np.ascontiguousarray(stack, dtype=np.float32)
        if stack.shape[1:] != self.shape:
            raise ValueError(f"reference images {stack.shape[1:]} do not match the template {self.shape}")
        out_s, out_q, out_b = [], [], []
        for a in range(0, len(stack), _MATCH_BATCH):
            part = stack[a:a + _MATCH_BATCH]
            s, b = self._integer_search(part)
            s, q = self._refine(part, s)
            out_s.append(s)
            out_q.append(q)
            out_b.append(b)
        if not out_s:
            return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=bool)
        return np.concatenate(out_s), np.concatenate(out_q), np.concatenate(out_b)


def repair_outliers(shifts: np.ndarray, quality: np.ndarray, at_bound: np.ndarray,
                    min_quality_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Replace the shifts of outlier frames by linear interpolation from good frames.

    A frame is an outlier when its quality is not finite or below ``min_quality_ratio``
    times the median quality of the measurable frames, or when its correlation peak is on
    the search bound and it matches the template worse than 90 % of the frames inside the
    bound (a frame just beyond the bound whose refinement converged is kept).

    Returns
    -------
    shifts : ndarray (n, 2), repaired copy
    outliers : ndarray (n,) bool
    """
    shifts = np.array(shifts, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    at_bound = np.asarray(at_bound, dtype=bool)
    finite = np.isfinite(q)
    if not np.any(finite):
        return shifts, np.ones(len(q), dtype=bool)
    ref = float(np.median(q[finite]))
    bad = ~finite
    if ref > 0:
        bad |= q < min_quality_ratio * ref
    inside = finite & ~at_bound & ~bad
    if np.any(at_bound):
        floor = float(np.percentile(q[inside], 10)) if np.any(inside) else np.inf
        bad |= at_bound & ~(q >= floor)
    good = ~bad
    if np.any(bad) and np.any(good):
        t = np.arange(len(q))
        for axis in range(2):
            shifts[bad, axis] = np.interp(t[bad], t[good], shifts[good, axis])
    return shifts, bad


@dataclass
class RigidMotion:
    """Result of :func:`estimate_rigid_motion`.

    Attributes
    ----------
    shifts : ndarray (T, 2) float64
        ``(dy, dx)`` per frame in px, re-centred on their median.
    quality : ndarray (T,)
        Normalised correlation of each aligned frame's reference image with the template.
    outliers : ndarray (T,) bool
        Frames whose shift was interpolated.
    template : ndarray (H, W) float32
        Template reference image (in the raw frame, before re-centring).
    template_offset : ndarray (2,)
        Median shift removed: ``corrected(p) = template(p - template_offset)``.
    reference : str
    sample_index : ndarray (n,) int
        Frames the template was built from (evenly spaced).
    sample : ndarray (n, H, W) float32 or None
        Those raw frames (kept with ``keep_sample=True``, e.g. for the session's median).
    """

    shifts: np.ndarray
    quality: np.ndarray
    outliers: np.ndarray
    template: np.ndarray
    template_offset: np.ndarray
    reference: str = "BV"
    info: dict = field(default_factory=dict)
    sample_index: np.ndarray | None = None
    sample: np.ndarray | None = None


def _median_ignoring_outside(warped: np.ndarray) -> np.ndarray:
    """Temporal median of registered images whose outside samples are NaN (fast, approximate).

    NaNs are replaced by +inf and -inf in alternate frames, which leaves the median of the
    finite values unchanged (exactly for an even count of NaNs, within one rank otherwise)
    and avoids ``nanmedian``'s slow path; pixels outside every frame take the median level.
    """
    sign = np.where(np.arange(len(warped)) % 2 == 0, np.inf, -np.inf).astype(np.float32)
    filled = np.where(np.isnan(warped), sign[:, None, None], warped)
    with np.errstate(invalid="ignore"):
        med = np.median(filled, axis=0)
    ok = np.isfinite(med)
    fill = float(np.median(med[ok])) if np.any(ok) else 0.0
    return np.where(ok, med, fill).astype(np.float32)


def _build_template(refs: np.ndarray, max_shift: float, iterations: int, min_quality_ratio: float
                    ) -> np.ndarray:
    template = np.median(refs, axis=0).astype(np.float32)
    for _ in range(max(0, int(iterations))):
        shifts, quality, bound = TemplateMatcher(template, max_shift).match(refs)
        shifts, bad = repair_outliers(shifts, quality, bound, min_quality_ratio)
        keep = ~bad if np.any(~bad) else np.ones(len(bad), bool)
        template = _median_ignoring_outside(translate_stack(refs[keep], shifts[keep], order=3, fill=np.nan))
    return template


def _nonfinite_frames_error(name: str, movie, chunk_frames: int) -> InputError:
    """The error for a movie with NaN/inf frames: scans the whole movie, names all of them as ranges."""
    from califlow.io.damage import frame_ranges

    bad: list[int] = []
    for a in range(0, int(movie.shape[0]), chunk_frames):
        frames = read_frames(movie, slice(a, min(int(movie.shape[0]), a + chunk_frames)))
        bad += (a + np.flatnonzero(~np.isfinite(frames.reshape(frames.shape[0], -1)).all(axis=1))).tolist()
    return InputError(f"{name}: {len(bad)} frame(s) contain NaN or infinite values (0-based): {frame_ranges(bad)}")


def _match_movie(movie, maker: ReferenceMaker, matcher: TemplateMatcher, chunk_frames: int, name: str,
                 progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match every frame's reference image to the template, ``chunk_frames`` frames at a time.

    Returns
    -------
    shifts : ndarray (T, 2) float64
        ``(dy, dx)`` px per frame (before outlier repair and re-centring).
    quality : ndarray (T,) float64
        Normalised correlation with the template after alignment.
    at_bound : ndarray (T,) bool
        The correlation peak lies on the search bound.

    Raises
    ------
    InputError
        A chunk holds NaN or infinite values (all such frames are named).
    """
    T = int(movie.shape[0])
    shifts = np.zeros((T, 2))
    quality = np.zeros(T)
    bound = np.zeros(T, dtype=bool)
    for a in range(0, T, chunk_frames):
        b = min(T, a + chunk_frames)
        frames = read_frames(movie, slice(a, b))
        if not np.all(np.isfinite(frames)):
            raise _nonfinite_frames_error(name, movie, chunk_frames)
        shifts[a:b], quality[a:b], bound[a:b] = matcher.match(maker(frames))
        if progress is not None:
            progress.update(b - a)
    return shifts, quality, bound


def _check_outliers(outliers: np.ndarray, name: str, reference: str) -> None:
    """Fail when no frame matched the template; log the frames whose shift was interpolated."""
    if np.all(outliers):
        raise InputError(f"{name}: no frame matched the motion template (reference "
                         f"'{reference}'); is the movie blank, or try reference_projection_rigid="
                         f"'{'neuron' if reference == 'BV' else 'BV'}'")
    if np.any(outliers):
        log.info("%s: %d frame(s) with unreliable registration got interpolated shifts "
                 "(first: %s)", name, int(outliers.sum()), np.nonzero(outliers)[0][:10].tolist())


def estimate_rigid_motion(movie, options: MotionOptions | None = None, *, progress=None, name: str = "movie",
                          keep_sample: bool = False) -> RigidMotion:
    """Estimate per-frame rigid motion of a movie.

    Parameters
    ----------
    movie : array-like, shape (T, H, W)
        NumPy or Zarr array of raw (downsampled) frames; read in chunks of
        ``options.chunk_frames``.
    options : MotionOptions, optional
        From :func:`califlow.motion.options.motion_options` (the schema's defaults when not
        given): reference image, vessel and neuron sizes (px), largest shift (px), template
        frames and passes, outlier threshold.
    progress : califlow.progress.Progress, optional
        Updated with the frames done.
    name : str
        Used in error messages (the input file).
    keep_sample : bool
        Return the raw template frames in ``RigidMotion.sample`` (``template_frames`` frames
        of memory), so the caller need not read them again.

    Returns
    -------
    RigidMotion
    """
    o = options if options is not None else motion_options()
    reference, chunk_frames = o.reference, o.chunk_frames
    max_shift, min_quality_ratio = o.max_shift, o.min_quality_ratio
    T, H, W = (int(v) for v in movie.shape)
    if T == 0:
        raise InputError(f"{name}: the movie has no frames")
    idx = sample_indices(T, o.template_frames)
    sample = read_frames(movie, idx)
    if not np.all(np.isfinite(sample)):
        raise _nonfinite_frames_error(name, movie, chunk_frames)
    maker = ReferenceMaker(reference, sample, o.bv_size, o.gsig)
    refs = maker(sample)
    if not keep_sample:
        del sample
        sample = None
    template = _build_template(refs, max_shift, o.template_iterations, min_quality_ratio)
    del refs
    shifts, quality, bound = _match_movie(movie, maker, TemplateMatcher(template, max_shift), chunk_frames,
                                          name, progress)
    shifts, outliers = repair_outliers(shifts, quality, bound, min_quality_ratio)
    _check_outliers(outliers, name, reference)
    offset = np.median(shifts, axis=0)
    shifts = shifts - offset
    return RigidMotion(shifts=shifts, quality=quality, outliers=outliers, template=template,
                       template_offset=offset, reference=reference, sample_index=idx, sample=sample)
