"""Non-rigid motion correction within a session (after the rigid step).

1. *Batches*: the session is cut into consecutive batches of ``non_rigid_batch_size =
   [min, max]`` frames, each cut placed at the frame with the largest motion score (the
   frame-to-frame change of the rigid shift, px) that keeps every batch within the bounds,
   so a batch is a low-motion stretch whose mean image is sharp.
2. *Field per batch*: the mean of the batch's rigid-corrected frames is registered to the
   session template (the median of rigid-corrected frames) by coarse-to-fine dense
   Lucas-Kanade: one level per entry of ``non_rigid_pyramid`` (coarse to fine, each twice
   the resolution of the previous, the last at full resolution), each on its channel image
   (``'BV'``: vesselness; ``'neuron'``: the neuron-scale band-pass of the rigid step). At a
   level the displacement solves, in a Gaussian window of ``WINDOW_SIGMA`` level-px around
   every pixel, the 2x2 least-squares system of the linearised image difference, with a
   Tikhonov term that keeps texture-less areas rigid; a few warping iterations per level.
3. *Guard against fitting noise*: the field is estimated on the batch's even frames and
   kept only if it raises the normalised correlation of the odd frames' mean with the
   template by more than ``MIN_GAIN`` (and then re-estimated on all frames); otherwise the
   batch stays rigid. On a purely rigid session the fields are therefore (almost always)
   zero. Residuals are weighted robustly (Cauchy), so firing neurons and pulsing vessels
   barely pull on the field.
4. Fields are smoothed, stored on a coarse grid (``GRID`` px) and, per frame, interpolated
   linearly in time between the two nearest batch centres; frames are then warped with
   the rigid shift plus the field (:func:`califlow.motion.warp.warp_stack`).

Convention: ``corrected_t(p) = raw_t(box0 + p + d_t + u_t(p))`` with ``u`` in px.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from califlow.motion.options import MotionOptions, motion_options
from califlow.motion.rigid import CAUCHY_SCALE_PER_MEAN_ABS_ERROR, ReferenceMaker, read_frames
from califlow.motion.warp import translate_stack, warp_stack
from califlow.preprocess.filters import gaussian_blur_stack

__all__ = ["GRID", "WINDOW_SIGMA", "MIN_GAIN", "motion_batches", "dense_flow", "NonRigidMotion",
           "estimate_nonrigid_motion"]

log = logging.getLogger("califlow")

#: spacing (px) of the coarse grid the fields are stored on
GRID = 8
#: Gaussian window of the local least squares, in px of each pyramid level
WINDOW_SIGMA = 10.0
#: held-out correlation gain a batch's field must bring to be kept: fields fitted to noise and
#: activity on simulated rigid sessions gain < 0.0025, true wobble of 1-2 px gains 0.005-0.05
MIN_GAIN = 0.004
_ITERATIONS = 3
_REGULARISATION = 0.05
_SMOOTH = 4.0


def motion_batches(score: np.ndarray, size_range=(20, 60)) -> np.ndarray:
    """Cut ``T`` frames into consecutive batches, cutting before high-motion frames.

    Parameters
    ----------
    score : ndarray (T,)
        Motion score per frame (change from the previous frame; ``score[0]`` unused).
    size_range : (int, int)
        Allowed batch lengths ``[min, max]`` in frames (the last batch, or a session shorter
        than ``min``, may be shorter).

    Returns
    -------
    ndarray of int, shape (n_batches + 1,): batch edges, ``edges[0] = 0``, ``edges[-1] = T``.
    """
    lo, hi = (int(v) for v in size_range)
    if lo < 1 or hi < lo:
        raise ValueError(f"non_rigid_batch_size must be [min, max] with 1 <= min <= max, got {[lo, hi]}")
    score = np.asarray(score, dtype=np.float64)
    T = len(score)
    edges = [0]
    s = 0
    while T - s > hi:  # loop over batches
        first = s + lo
        last = min(s + hi, T - lo) if T - s >= 2 * lo else s + hi
        last = max(last, first)
        cut = first + int(np.argmax(score[first:last + 1]))
        edges.append(cut)
        s = cut
    edges.append(T)
    return np.asarray(edges, dtype=np.int64)


def _normalise(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float32)
    sd = float(img.std())
    return (img - float(img.mean())) / (sd if sd > 0 else 1.0)


def _remap(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img, xx + u[1], yy + u[0], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def dense_flow(templates: list[np.ndarray], movings: list[np.ndarray]) -> np.ndarray:
    """Coarse-to-fine dense Lucas-Kanade displacement with ``moving(p + u(p)) ~ template(p)``.

    Parameters
    ----------
    templates, movings : lists of ndarray (h, w)
        Channel images per pyramid level, coarse to fine. Level ``k`` of ``L`` solves the
        local least squares in a Gaussian window of ``WINDOW_SIGMA * 2 ** (L - 1 - k)`` px,
        starting from the previous level's field.

    Returns
    -------
    ndarray (2, h, w) float32: ``(u_y, u_x)`` in px.
    """
    L = len(templates)
    h, w = templates[-1].shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = np.zeros((2, h, w), dtype=np.float32)
    for k in range(L):  # loop over pyramid levels
        sigma = WINDOW_SIGMA * 2 ** (L - 1 - k)
        t = _normalise(templates[k])
        m = _normalise(movings[k])
        gy, gx = np.gradient(t)

        def blur(a, sigma=sigma):
            return gaussian_blur_stack(a.astype(np.float32), sigma)
        for _ in range(_ITERATIONS):  # Gauss-Newton iterations at this level
            err = _remap(m, u) - t
            # samples taken outside the image carry no information
            outside = ((yy + u[0] < 0) | (yy + u[0] > h - 1) | (xx + u[1] < 0) | (xx + u[1] > w - 1))
            err[outside] = 0.0
            # Cauchy weights: pixels that differ for another reason than motion (a firing
            # neuron, a pulsing vessel) barely pull on the field
            c2 = (CAUCHY_SCALE_PER_MEAN_ABS_ERROR * float(np.mean(np.abs(err))) + 1e-12) ** 2
            wts = 1.0 / (1.0 + err * err / c2)
            wgy, wgx = wts * gy, wts * gx
            hyy, hxx, hxy = blur(wgy * gy), blur(wgx * gx), blur(wgy * gx)
            lam = _REGULARISATION * float(np.mean(hyy + hxx))
            det = (hyy + lam) * (hxx + lam) - hxy * hxy
            by, bx = blur(wgy * err), blur(wgx * err)
            u[0] -= ((hxx + lam) * by - hxy * bx) / det
            u[1] -= ((hyy + lam) * bx - hxy * by) / det
    return gaussian_blur_stack(u, _SMOOTH)


def _ncc(a: np.ndarray, b: np.ndarray, margin: int) -> float:
    a = a[margin:a.shape[0] - margin, margin:a.shape[1] - margin]
    b = b[margin:b.shape[0] - margin, margin:b.shape[1] - margin]
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b)) / den if den > 0 else 0.0


@dataclass
class NonRigidMotion:
    """Fields of :func:`estimate_nonrigid_motion`.

    Attributes
    ----------
    edges : ndarray (n_batches + 1,) int
        Batch boundaries (frames).
    fields : ndarray (n_batches, 2, gh, gw) float32
        Displacement per batch on the coarse grid (``GRID`` px), in px.
    accepted : ndarray (n_batches,) bool
        Batches whose field passed the held-out check (the others are zero).
    box : (y0, y1, x0, x1)
        Window (ingest frame) the fields were estimated on (the rigid crop).
    """

    edges: np.ndarray
    fields: np.ndarray
    accepted: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def max_displacement(self) -> float:
        """Largest field magnitude, px."""
        return float(np.max(np.abs(self.fields))) if self.fields.size else 0.0

    def frame_blend(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(field_lo, field_hi, alpha)`` of each frame: linear in time between batch centres."""
        centres = 0.5 * (self.edges[:-1] + self.edges[1:] - 1)
        t = np.asarray(frames, dtype=np.float64)
        n = len(centres)
        hi = np.clip(np.searchsorted(centres, t, side="right"), 0, n - 1)
        lo = np.clip(hi - 1, 0, n - 1)
        span = centres[hi] - centres[lo]
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(span > 0, (t - centres[lo]) / span, 0.0)
        alpha = np.clip(alpha, 0.0, 1.0)
        return lo.astype(np.int64), hi.astype(np.int64), alpha

    def warp(self, frames: np.ndarray, frame_index: np.ndarray, shifts: np.ndarray,
             box: tuple[int, int, int, int]) -> np.ndarray:
        """Correct raw frames (n, H, W) with their rigid shifts and the fields, cropped to ``box``."""
        lo, hi, alpha = self.frame_blend(frame_index)
        origin = (box[0] - self.box[0], box[2] - self.box[2])
        return warp_stack(frames, shifts, self.fields, GRID, lo, hi, alpha, box, field_origin=origin)


def _channels(maker_bv: ReferenceMaker, maker_neuron: ReferenceMaker, pyramid, image: np.ndarray
              ) -> list[np.ndarray]:
    cache = {}
    out = []
    for kind in pyramid:
        if kind not in cache:
            cache[kind] = (maker_bv if kind == "BV" else maker_neuron)(image[None])[0]
        out.append(cache[kind])
    return out


def _rigid_template(movie, shifts: np.ndarray, box: tuple[int, int, int, int], options: MotionOptions
                    ) -> tuple[ReferenceMaker, ReferenceMaker, np.ndarray]:
    """The session template and the channel makers built from it.

    Returns the ``'BV'`` and ``'neuron'`` reference makers (illumination from the sample) and the
    template, float32 (h, w): the median of ``options.template_frames`` evenly spaced frames,
    rigid-corrected and cropped to ``box``.
    """
    T = int(movie.shape[0])
    idx = np.unique(np.round(np.linspace(0, T - 1, min(T, options.template_frames))).astype(np.int64))
    sample = translate_stack(read_frames(movie, idx), shifts[idx], box, order=3)
    maker_bv = ReferenceMaker("BV", sample, options.bv_size, options.gsig)
    maker_neuron = ReferenceMaker("neuron", sample, options.bv_size, options.gsig)
    return maker_bv, maker_neuron, np.median(sample, axis=0).astype(np.float32)


class _BatchFields:
    """Fields of the batches, from the even- and odd-frame sums of the batch being read.

    Parameters
    ----------
    maker_bv, maker_neuron : ReferenceMaker
        Channel images of the pyramid levels.
    pyramid : sequence of {'BV', 'neuron'}
        Channel per level, coarse to fine.
    template : ndarray (h, w)
        Session template (rigid-corrected).
    n_batches : int
    """

    def __init__(self, maker_bv: ReferenceMaker, maker_neuron: ReferenceMaker, pyramid, template: np.ndarray,
                 n_batches: int):
        self.makers = (maker_bv, maker_neuron)
        self.pyramid = pyramid
        self.t_channels = _channels(maker_bv, maker_neuron, pyramid, template)
        h, w = template.shape
        gh, gw = (h - 1) // GRID + 2, (w - 1) // GRID + 2
        self.fields = np.zeros((n_batches, 2, gh, gw), dtype=np.float32)
        self.accepted = np.zeros(n_batches, dtype=bool)
        self.margin = max(2, min(h, w) // 10)
        self.sums = np.zeros((2, h, w), dtype=np.float64)      # even / odd frame sums of the open batch
        self.counts = np.zeros(2, dtype=np.int64)
        self.gains: list[float] = []
        self.node_y = np.minimum(np.arange(gh) * GRID, h - 1)
        self.node_x = np.minimum(np.arange(gw) * GRID, w - 1)

    def add(self, frames: np.ndarray, parity: np.ndarray) -> None:
        """Add rigid-corrected frames (n, h, w) of the open batch; ``parity`` (n,) is 0 for even, 1 for odd."""
        for p in (0, 1):
            sel = frames[parity == p]
            if len(sel):
                self.sums[p] += sel.sum(axis=0, dtype=np.float64)
                self.counts[p] += len(sel)

    def close(self, batch: int) -> None:
        """Estimate the field of ``batch`` from the frames added (held-out check), then start a new batch."""
        if self.counts[1] > 0:
            self._fit(batch)
        self.sums[:] = 0
        self.counts[:] = 0

    def _fit(self, batch: int) -> None:
        sums, counts, t_fine = self.sums, self.counts, self.t_channels[-1]
        even = (sums[0] / max(counts[0], 1)).astype(np.float32)
        odd = (sums[1] / max(counts[1], 1)).astype(np.float32)
        u_even = dense_flow(self.t_channels, _channels(*self.makers, self.pyramid, even))
        odd_fine = _channels(*self.makers, self.pyramid[-1:], odd)[0]
        gain = _ncc(_remap(odd_fine, u_even), t_fine, self.margin) - _ncc(odd_fine, t_fine, self.margin)
        self.gains.append(gain)
        if gain > MIN_GAIN:
            both = ((sums[0] + sums[1]) / (counts.sum())).astype(np.float32)
            u = dense_flow(self.t_channels, _channels(*self.makers, self.pyramid, both))
            self.fields[batch] = u[:, self.node_y][:, :, self.node_x]
            self.accepted[batch] = True


def estimate_nonrigid_motion(movie, shifts: np.ndarray, box: tuple[int, int, int, int],
                             options: MotionOptions | None = None, *, progress=None) -> NonRigidMotion:
    """Estimate a smooth displacement field per low-motion batch (see the module docstring).

    Parameters
    ----------
    movie : array-like (T, H, W)
        Raw frames (NumPy or Zarr).
    shifts : ndarray (T, 2)
        Rigid shifts from :func:`califlow.motion.rigid.estimate_rigid_motion`.
    box : (y0, y1, x0, x1)
        Rigid crop window (ingest frame).
    options : MotionOptions, optional
        From :func:`califlow.motion.options.motion_options` (the schema's defaults when not
        given); uses ``pyramid`` (channel per level, coarse to fine), ``batch_size``,
        ``bv_size``, ``gsig``, ``template_frames`` and ``chunk_frames``.
    progress : califlow.progress.Progress, optional
        Updated with the frames done.

    Returns
    -------
    NonRigidMotion
    """
    o = options if options is not None else motion_options()
    T = int(movie.shape[0])
    score = np.zeros(T)
    score[1:] = np.linalg.norm(np.diff(shifts, axis=0), axis=1)
    edges = motion_batches(score, o.batch_size)
    maker_bv, maker_neuron, template = _rigid_template(movie, shifts, box, o)
    batches = _BatchFields(maker_bv, maker_neuron, o.pyramid, template, len(edges) - 1)
    del template
    b = 0
    for a in range(0, T, o.chunk_frames):  # loop over chunks
        stop = min(T, a + o.chunk_frames)
        frames = translate_stack(read_frames(movie, slice(a, stop)), shifts[a:stop], box, order=3)
        t = a
        while t < stop:  # loop over the batches this chunk touches
            end = min(stop, int(edges[b + 1]))
            batches.add(frames[t - a:end - a], (np.arange(t, end) - edges[b]) % 2)
            t = end
            if end == edges[b + 1]:
                batches.close(b)
                b += 1
        if progress is not None:
            progress.update(stop - a)
    fields, accepted = batches.fields, batches.accepted
    log.info("non-rigid: %d of %d batches kept a field (largest displacement %.2f px)",
             int(accepted.sum()), len(accepted), float(np.abs(fields).max()) if fields.size else 0.0)
    log.debug("non-rigid held-out correlation gains: %s", np.round(batches.gains, 4).tolist())
    return NonRigidMotion(edges=edges, fields=fields, accepted=accepted, box=tuple(int(v) for v in box))
