"""Registration images made from a session's projections.

Three channels drive the inter-session registration (CaliAli's idea, our normalisation):

- ``bv``: the vesselness image (``projections["bv"]``);
- ``neuron``: the neuron image, normalised ``cn`` times normalised ``pnr`` (cells that are
  both correlated and bright; CaliAli uses PNR·Cn² followed by CLAHE);
- ``fused``: the pixel-wise max of the two, for the intermediate pyramid levels.

Each channel is local-contrast normalised (zero local mean, unit local standard deviation
over a Gaussian window of ``sigma`` px), which plays the role of CaliAli's CLAHE: faint and
bright regions weigh alike, and the demons forces are on the same scale for every channel
and session. Invalid (non-finite) pixels are excluded through a mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from califlow.errors import InputError

__all__ = ["CHANNELS", "PROJECTION_KEYS", "normalise01", "local_contrast", "neuron_image",
           "registration_channels", "check_projections"]

CHANNELS = ("bv", "neuron", "fused")
PROJECTION_KEYS = ("mean", "bv", "cn", "pnr")


#: Smallest side (px) of a field of view that sessions can be registered on.
MIN_ALIGN_SIDE = 32


def check_projections(projections: Mapping[str, np.ndarray], name: str, *, need: tuple[str, ...] = ("bv", "cn"),
                      min_side: int = MIN_ALIGN_SIDE) -> tuple[int, int]:
    """Check one session's projections (2-D float arrays of one shape); return (h, w).

    ``min_side`` is the smallest side allowed (px): :data:`MIN_ALIGN_SIDE` when the session
    is registered to others, 1 when there is nothing to align.

    Raises
    ------
    InputError
        Naming the session and the offending projection.
    """
    shape = None
    for key in need:
        if key not in projections:
            raise InputError(f"session {name!r}: projection {key!r} is missing (have {sorted(projections)})")
    for key, img in projections.items():
        if key not in PROJECTION_KEYS:
            continue
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise InputError(f"session {name!r}: projection {key!r} must be 2-D (H, W), got shape {arr.shape}")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise InputError(f"session {name!r}: projection {key!r} has shape {arr.shape}, others {shape}")
        finite = np.isfinite(arr)
        if finite.mean() < 0.5:
            raise InputError(f"session {name!r}: projection {key!r} is mostly NaN/inf "
                             f"({100 * (1 - finite.mean()):.0f}%)")
        if np.nanstd(arr[finite]) == 0:
            raise InputError(f"session {name!r}: projection {key!r} is constant; the session has no usable image")
    if shape is None or min(shape) < min_side:
        raise InputError(f"session {name!r}: projections of shape {shape} are too small to align (need >= "
                         f"{min_side} x {min_side}); with one session, or do_alignment: false, any size is accepted")
    return int(shape[0]), int(shape[1])


def normalise01(image: np.ndarray, mask: np.ndarray | None = None, lo: float = 0.5, hi: float = 99.9) -> np.ndarray:
    """Robust min-max scaling to [0, 1] (percentiles ``lo``/``hi`` of the masked pixels); NaN → 0."""
    img = np.asarray(image, dtype=np.float32)
    ok = np.isfinite(img) if mask is None else (mask & np.isfinite(img))
    vals = img[ok]
    if vals.size == 0:
        return np.zeros_like(img)
    a, b = np.percentile(vals, [lo, hi])
    scale = np.float32(b - a) if b > a else np.float32(1.0)
    out = np.clip((img - np.float32(a)) / scale, 0, 1)
    out[~ok] = 0
    return out.astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT)


def local_contrast(image: np.ndarray, mask: np.ndarray, sigma: float, floor: float = 0.1) -> np.ndarray:
    """Local zero-mean, unit-variance normalisation over a Gaussian window (masked).

    ``(I - <I>) / sqrt(<(I - <I>)^2> + (floor * global std)^2)`` with ``<.>`` the masked
    Gaussian mean of width ``sigma`` px; the floor keeps flat, noisy regions from being
    amplified without bound. Pixels outside ``mask`` are 0. Output float32, clipped to ±5.
    """
    m = mask.astype(np.float32)
    img = np.where(mask, image, 0).astype(np.float32)
    wsum = np.maximum(_blur(m, sigma), 1e-6)
    mean = _blur(img * m, sigma) / wsum
    dev = (img - mean) * m
    var = _blur(dev * dev, sigma) / wsum
    gstd = float(np.sqrt(np.mean(dev[mask] ** 2))) if mask.any() else 1.0
    out = dev / np.sqrt(var + (floor * gstd) ** 2 + 1e-12)
    return np.clip(out, -5, 5).astype(np.float32) * m


def neuron_image(projections: Mapping[str, np.ndarray], mask: np.ndarray | None = None) -> np.ndarray:
    """Neuron image in [0, 1]: normalised ``cn`` times normalised ``pnr`` (``cn`` alone if no pnr)."""
    cn = normalise01(projections["cn"], mask)
    if "pnr" in projections and projections["pnr"] is not None:
        return cn * normalise01(projections["pnr"], mask)
    return cn


def registration_channels(projections: Mapping[str, np.ndarray], *,
                          sigma: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Registration channels of one session.

    Parameters
    ----------
    projections : mapping with ``bv`` and ``cn`` (and optionally ``pnr``, ``mean``), (h, w)
    sigma : float
        Width (px) of the local-contrast window.

    Returns
    -------
    channels : dict ``{"bv", "neuron", "fused"} -> float32 (h, w)``
    mask : bool (h, w), pixels where every projection is finite
    """
    keys = [k for k in PROJECTION_KEYS if k in projections and projections[k] is not None]
    mask = np.ones(np.asarray(projections[keys[0]]).shape, dtype=bool)
    for k in keys:
        mask &= np.isfinite(np.asarray(projections[k]))
    bv = normalise01(projections["bv"], mask)
    neu = normalise01(neuron_image(projections, mask), mask)
    fused = np.maximum(bv, neu)
    out = {"bv": local_contrast(bv, mask, sigma), "neuron": local_contrast(neu, mask, sigma),
           "fused": local_contrast(fused, mask, sigma)}
    return out, mask
