"""Groupwise non-rigid alignment with a cost linear in the number of sessions.

CaliAli registers all ordered session pairs (O(S²) demons runs) and averages the fields.
Here each outer round registers every session once to the leave-one-out mean of the
currently aligned sessions (O(S) demons runs per round):

1. warp every session's channels into the common grid through its current map;
2. for session s, template = mean of the other sessions (masked); the demons field u_s
   takes session s onto it; the step is shrunk by (S-1)/S, since the leave-one-out mean
   sits that far from the full mean (two sessions meet half-way instead of swapping);
3. compose: ``map_s <- map_s ∘ (id + u_s)``;
4. re-centre: with ``ū`` the mean displacement over sessions, ``map_s <- map_s ∘ (id + ū)^-1``,
   so the common frame is the mean anatomy (no template session).

Rounds stop when the largest mean update is below ``tol_px``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from califlow.align.demons import Level, demons_register
from califlow.align.maps import identity_map, invert_map

__all__ = ["warp_channels", "compose_map", "recentre_maps", "groupwise_nonrigid"]

log = logging.getLogger("califlow.align")


def _remap(img: np.ndarray, py: np.ndarray, px: np.ndarray, fill: float = 0.0,
           border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    return cv2.remap(np.ascontiguousarray(img, np.float32), np.asarray(px, np.float32), np.asarray(py, np.float32),
                     interpolation=cv2.INTER_LINEAR, borderMode=border, borderValue=fill)


def warp_channels(channels: dict[str, np.ndarray], mask: np.ndarray, map_: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Warp a session's channels (h, w) and valid mask into the grid of ``map_`` (2, H, W)."""
    out = {k: _remap(v, map_[0], map_[1]) for k, v in channels.items()}
    m = _remap(mask.astype(np.float32), map_[0], map_[1]) > 0.99
    return out, m


def compose_map(map_: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``p -> map_(p + field(p))`` for a full (finite) map (2, H, W); linear extension outside."""
    h, w = map_.shape[1:]
    ident = identity_map((h, w))
    disp = map_ - ident
    py = ident[0] + field[0]
    px = ident[1] + field[1]
    dy = _remap(disp[0], py, px, border=cv2.BORDER_REPLICATE)
    dx = _remap(disp[1], py, px, border=cv2.BORDER_REPLICATE)
    return np.stack([py + dy, px + dx]).astype(np.float32)


def recentre_maps(maps: Sequence[np.ndarray], offsets: np.ndarray) -> list[np.ndarray]:
    """Re-parametrise the common grid so that the mean displacement over sessions is zero.

    Parameters
    ----------
    maps : sequence of (2, H, W)
        Full (finite) maps of every session.
    offsets : ndarray (S, 2)
        Per-session constant offsets (centre-crop origin) excluded from the mean.
    """
    h, w = maps[0].shape[1:]
    ident = identity_map((h, w))
    mean_disp = np.mean([m - ident - np.asarray(o, np.float32)[:, None, None] for m, o in zip(maps, offsets)], axis=0)
    phi = invert_map(ident + mean_disp, (h, w))
    bad = ~np.isfinite(phi).all(axis=0)
    if bad.any():  # outside the preimage: extend with the nearest displacement
        from califlow.align.maps import fill_invalid
        phi = fill_invalid(phi)
    return [compose_map(m, phi - ident) for m in maps]


def groupwise_nonrigid(channels: Sequence[dict[str, np.ndarray]], masks: Sequence[np.ndarray],
                       maps: Sequence[np.ndarray], offsets: np.ndarray, levels: Sequence[Level], *,
                       n_rounds: int = 2, tol_px: float = 0.05, min_overlap: float = 0.5
                       ) -> tuple[list[np.ndarray], dict]:
    """Groupwise non-rigid refinement of the sessions' maps.

    Parameters
    ----------
    channels : per session, dict channel -> float32 (h_s, w_s)
    masks : per session, bool (h_s, w_s)
    maps : per session, full float32 map (2, H, W) (e.g. after translation)
    offsets : (S, 2) centre-crop origins (kept out of the re-centring)
    levels : pyramid of :class:`~califlow.align.demons.Level`, coarse to fine
    n_rounds : int
        Maximum outer rounds.
    tol_px : float
        Stop when the largest mean |update| over sessions is below this (px).
    min_overlap : float
        Template pixels need at least this share of the other sessions.

    Returns
    -------
    maps : list of (2, H, W) float32
    info : dict with ``rounds`` (per round: mean |update| per session, px)
    """
    n = len(channels)
    maps = [m.astype(np.float32) for m in maps]
    info: dict = {"rounds": []}
    if n < 2:
        return maps, info
    used = sorted({c for lv in levels for c in lv.channels})
    shrink = (n - 1) / n
    for rnd in range(n_rounds):
        warped = [warp_channels({c: ch[c] for c in used}, mk, mp) for ch, mk, mp in zip(channels, masks, maps)]
        count = np.sum([wm for _, wm in warped], axis=0).astype(np.float32)
        totals = {c: np.sum([wc[c] * wm for wc, wm in warped], axis=0) for c in used}
        updates = []
        for s, (wc, wm) in enumerate(warped):
            cnt = count - wm
            tmask = cnt >= max(1.0, min_overlap * (n - 1))
            tmpl = {c: np.where(cnt > 0, (totals[c] - wc[c] * wm) / np.maximum(cnt, 1), 0).astype(np.float32)
                    for c in used}
            u = demons_register(tmpl, wc, tmask, wm, levels) * np.float32(shrink)
            maps[s] = compose_map(maps[s], u)
            updates.append(float(np.mean(np.hypot(u[0], u[1])[wm])) if wm.any() else 0.0)
        maps = recentre_maps(maps, offsets)
        info["rounds"].append(updates)
        log.info("non-rigid round %d: mean |update| per session (px) %s", rnd + 1,
                 ", ".join(f"{u:.2f}" for u in updates))
        if max(updates) < tol_px:
            break
    return maps, info
