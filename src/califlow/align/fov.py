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
from collections.abc import Sequence

import numpy as np

from califlow.errors import InputError
from califlow.motion.warp import largest_valid_rectangle as largest_rectangle

__all__ = ["largest_rectangle", "common_fov"]

log = logging.getLogger("califlow.align")


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def common_fov(valid: np.ndarray, names: Sequence[str], *, policy: str,
               max_fov_loss: float, min_sessions: int = 2) -> dict:
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
    kept = list(range(n))
    box, loss, lim, gain = _analyse(valid, kept)
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
    return _drop_limiting(valid, names, kept, (box, loss, lim, gain), info, max_fov_loss, min_sessions)


def _analyse(valid: np.ndarray, idx: list[int]) -> tuple[tuple, float, int | None, float]:
    """Largest rectangle of the sessions ``idx`` and the session limiting it.

    Returns ``(box, loss, lim, gain)``: the box (y0, y1, x0, x1), the fraction of the (H, W)
    grid it loses, the index of the session whose removal enlarges it most (None if none
    does) and the fraction of the grid that removal would win back.
    """
    total = float(valid.shape[1] * valid.shape[2])
    box = largest_rectangle(np.logical_and.reduce(valid[idx], axis=0))
    loss = 1.0 - _area(box) / total
    lim, gain = None, 0.0
    if len(idx) > 1:
        for s in idx:
            others = [t for t in idx if t != s]
            g = (_area(largest_rectangle(np.logical_and.reduce(valid[others], axis=0))) - _area(box)) / total
            if g > gain:
                lim, gain = s, g
    return box, loss, lim, gain


def _drop_limiting(valid: np.ndarray, names: Sequence[str], kept: list[int], state: tuple, info: dict,
                   max_fov_loss: float, min_sessions: int) -> dict:
    """Policy ``drop``: remove limiting sessions until the loss is within ``max_fov_loss``."""
    box, loss, lim, _ = state
    while loss > max_fov_loss:
        if lim is None or len(kept) - 1 < min_sessions:
            raise InputError(
                f"fov_policy 'drop': the common field of view still loses {100 * loss:.1f}% "
                f"(max_fov_loss = {max_fov_loss}) with sessions {[names[k] for k in kept]}; "
                "no session can be dropped without going below 2 sessions")
        log.warning("fov_policy 'drop': dropping session %r, which limits the common field of view", names[lim])
        info["dropped"].append(names[lim])
        kept.remove(lim)
        box, loss, lim, _ = _analyse(valid, kept)
    info.update(box=box, kept=kept, loss=loss)
    return info
