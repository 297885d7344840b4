"""Common field of view of aligned sessions, with a guard against one session shrinking it.

CaliAli crops to the largest NaN-free rectangle after each stage, so one session with a large
displacement or dead pixels shrinks everyone's field of view (CaliAli issue #14). Here the
crop is computed once, on the intersection of the sessions' valid pixels; the session whose
removal would enlarge it most is reported as the limiting one, and the policy decides:

- ``crop``: crop to the intersection's largest rectangle; refuse (InputError naming the
  limiting session) when that removes more than ``max_fov_loss`` of the common grid;
- ``drop``: drop limiting sessions, one at a time, until the loss is within ``max_fov_loss``;
- ``pad``: keep the whole common grid; pixels a session does not cover are NaN in its map
  (zeros in the concatenated movie).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numba
import numpy as np

from califlow.errors import InputError

__all__ = ["largest_rectangle", "common_fov"]

log = logging.getLogger("califlow.align")


@numba.njit(cache=True)
def _largest_rectangle(mask):
    h, w = mask.shape
    heights = np.zeros(w + 1, np.int64)
    stack = np.zeros(w + 2, np.int64)
    best = 0
    by0, by1, bx0, bx1 = 0, 0, 0, 0
    for i in range(h):
        for j in range(w):
            heights[j] = heights[j] + 1 if mask[i, j] else 0
        heights[w] = 0
        top = 0
        for j in range(w + 1):
            while top > 0 and heights[stack[top - 1]] >= heights[j]:
                hh = heights[stack[top - 1]]
                top -= 1
                left = stack[top - 1] + 1 if top > 0 else 0
                area = hh * (j - left)
                if area > best:
                    best = area
                    by0, by1, bx0, bx1 = i - hh + 1, i + 1, left, j
            stack[top] = j
            top += 1
    return by0, by1, bx0, bx1


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Largest axis-aligned rectangle of True pixels: (y0, y1, x0, x1), end-exclusive."""
    m = np.ascontiguousarray(mask, dtype=np.bool_)
    if not m.any():
        return 0, 0, 0, 0
    return tuple(int(v) for v in _largest_rectangle(m))


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def common_fov(valid: np.ndarray, names: Sequence[str], *, policy: str = "crop",
               max_fov_loss: float = 0.3, min_sessions: int = 2) -> dict:
    """Decide the common field of view.

    Parameters
    ----------
    valid : bool ndarray (S, H, W)
        Pixels of the common grid that each session covers.
    names : sequence of S session names (for messages)
    policy : {"crop", "drop", "pad"}
    max_fov_loss : float
        Largest fraction of the common grid the crop may remove.
    min_sessions : int
        ``drop`` never keeps fewer sessions than this.

    Returns
    -------
    dict
        ``box`` (y0, y1, x0, x1) on the common grid, ``kept`` (indices), ``dropped`` (names),
        ``loss`` (fraction of the grid removed), ``limiting_session`` (name or None),
        ``limiting_gain`` (fraction of the grid its removal would win back), ``policy``.

    Raises
    ------
    InputError
        ``crop`` losing more than ``max_fov_loss``, or ``drop`` unable to stay within it.
    """
    if policy not in ("crop", "drop", "pad"):
        raise InputError(f"inter_session_alignment.fov_policy must be 'crop', 'drop' or 'pad', not {policy!r}")
    n, h, w = valid.shape
    total = float(h * w)
    kept = list(range(n))

    def analyse(idx: list[int]) -> tuple[tuple, float, int | None, float]:
        inter = np.logical_and.reduce(valid[idx], axis=0)
        box = largest_rectangle(inter)
        loss = 1.0 - _area(box) / total
        lim, gain = None, 0.0
        if len(idx) > 1:
            for s in idx:
                others = [t for t in idx if t != s]
                g = (_area(largest_rectangle(np.logical_and.reduce(valid[others], axis=0))) - _area(box)) / total
                if g > gain:
                    lim, gain = s, g
        return box, loss, lim, gain

    box, loss, lim, gain = analyse(kept)
    info = {"policy": policy, "grid_shape": [h, w], "max_fov_loss": max_fov_loss,
            "limiting_session": names[lim] if lim is not None else None, "limiting_gain": gain,
            "intersection_loss": loss, "dropped": []}
    lim_msg = (f"session {names[lim]!r} limits it (without it {100 * gain:.1f}% more of the grid would be kept)"
               if lim is not None else "no single session limits it")
    log.info("common field of view: largest valid rectangle %s loses %.1f%% of the %dx%d grid; %s",
             box, 100 * loss, h, w, lim_msg)
    if policy == "pad":
        info.update(box=(0, h, 0, w), kept=kept, loss=0.0)
        return info
    if policy == "crop":
        if loss > max_fov_loss:
            raise InputError(
                f"the common field of view would lose {100 * loss:.1f}% of the {h}x{w} grid "
                f"(inter_session_alignment.max_fov_loss = {max_fov_loss}); {lim_msg}. "
                "Check that session, or set inter_session_alignment.fov_policy to 'drop' (leave it out) "
                "or 'pad' (keep the full grid), or raise max_fov_loss.")
        info.update(box=box, kept=kept, loss=loss)
        return info
    # drop
    while loss > max_fov_loss:
        if lim is None or len(kept) - 1 < min_sessions:
            raise InputError(
                f"fov_policy 'drop': the common field of view still loses {100 * loss:.1f}% "
                f"(max_fov_loss = {max_fov_loss}) with sessions {[names[k] for k in kept]}; "
                "no session can be dropped without going below 2 sessions")
        log.warning("fov_policy 'drop': dropping session %r, which limits the common field of view", names[lim])
        info["dropped"].append(names[lim])
        kept.remove(lim)
        box, loss, lim, gain = analyse(kept)
    info.update(box=box, kept=kept, loss=loss)
    return info
