"""Scores of motion estimates against the simulator's ground truth (tests and benchmarks).

Conventions of :mod:`califlow.simulate.groundtruth`: ``gt.motion[s]`` (T, 2) is the rigid
displacement (dy, dx) of session ``s`` in pixels, and its non-rigid wobble is
``tensordot(gt.wobble_coef[t], gt.wobble_basis[s])`` (2, H, W) px, sampled at the raw frame
position. Estimated shifts follow :mod:`califlow.motion.warp` (``corrected_t(p) = raw_t(p + d_t)``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = ["motion_error", "motion_residual", "nonrigid_vs_rigid"]


def motion_error(est: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """RMSE and max of the per-frame error vector after removing the global offset.

    Parameters
    ----------
    est, true : ndarray, shape (T, 2)
        Estimated and true rigid displacements (px).

    Returns
    -------
    (rmse, worst) : floats, px
    """
    err = (est - est.mean(0)) - (true - true.mean(0))
    e = np.sqrt((err ** 2).sum(axis=1))
    return float(np.sqrt(np.mean(e ** 2))), float(e.max())


def motion_residual(gt, shifts: np.ndarray, box: tuple[int, int, int, int], nr=None, step: int = 5) -> float:
    """RMS of the frame-varying part of (estimated - true) displacement over the output pixels.

    Parameters
    ----------
    gt : GroundTruth
        Of a simulated animal; session 0 is scored.
    shifts : ndarray, shape (T, 2)
        Estimated rigid shifts (px).
    box : (y0, y1, x0, x1)
        Crop box of the corrected movie in the raw frame (end-exclusive).
    nr : NonrigidMotion, optional
        Non-rigid fields added to the rigid shifts (:func:`califlow.motion.nonrigid.estimate_nonrigid_motion`).
    step : int
        Score every ``step``-th frame.

    Returns
    -------
    float
        RMS displacement error (px) after removing its mean over frames (a fixed deformation
        of the output frame is harmless).
    """
    from califlow.motion.nonrigid import GRID

    true_d = gt.motion[0].astype(np.float64)
    c = (true_d - shifts).mean(0)
    h, w = box[1] - box[0], box[3] - box[2]
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.arange(0, len(shifts), step)
    basis, coef = gt.wobble_basis[0], gt.wobble_coef[gt.session_slice(0)]
    if nr is not None:
        lo, hi, alpha = nr.frame_blend(frames)
    errs = []
    for k, t in enumerate(frames):
        ry, rx = yy + box[0] + true_d[t, 0], xx + box[2] + true_d[t, 1]
        wy = wx = 0.0
        if basis.shape[0]:
            wob = np.tensordot(coef[t], basis, axes=1)
            wy, wx = map_coordinates(wob[0], [ry, rx], order=1), map_coordinates(wob[1], [ry, rx], order=1)
        ey = shifts[t, 0] + c[0] - true_d[t, 0] - wy + np.zeros((h, w))
        ex = shifts[t, 1] + c[1] - true_d[t, 1] - wx + np.zeros((h, w))
        if nr is not None:
            f = (1 - alpha[k]) * nr.fields[lo[k]] + alpha[k] * nr.fields[hi[k]]
            ey = ey + map_coordinates(f[0], [yy / GRID, xx / GRID], order=1)
            ex = ex + map_coordinates(f[1], [yy / GRID, xx / GRID], order=1)
        errs.append(np.stack([ey, ex]))
    e = np.array(errs)
    e -= e.mean(axis=0)
    return float(np.sqrt((e ** 2).sum(axis=1).mean()))


def nonrigid_vs_rigid(animal, options=None):
    """Rigid then non-rigid motion of session 0 of a simulated animal, scored by :func:`motion_residual`.

    ``options`` is a :class:`~califlow.motion.options.MotionOptions` (the schema's defaults when not given).

    Returns
    -------
    dict
        ``r_rigid``, ``r_nonrigid``: the residuals (px) without and with the non-rigid fields;
        ``shifts`` (T, 2) rigid shifts (px), ``box`` (y0, y1, x0, x1) and ``nonrigid``, the
        :class:`~califlow.motion.nonrigid.NonRigidMotion` estimated.
    """
    from califlow.motion.nonrigid import estimate_nonrigid_motion
    from califlow.motion.options import motion_options
    from califlow.motion.rigid import estimate_rigid_motion
    from califlow.motion.warp import valid_box

    movie = animal.session_frames(0).astype(np.float32)
    options = options if options is not None else motion_options()
    rig = estimate_rigid_motion(movie, options)
    box = valid_box(rig.shifts, movie.shape[1:])
    nr = estimate_nonrigid_motion(movie, rig.shifts, box, options)
    gt = animal.ground_truth
    return {"r_rigid": motion_residual(gt, rig.shifts, box), "r_nonrigid": motion_residual(gt, rig.shifts, box, nr),
            "shifts": rig.shifts, "box": box, "nonrigid": nr}
