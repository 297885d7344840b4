"""Static anatomy of a simulated field of view: neuron footprints, vessels, smooth fields.

Everything here is drawn once per animal (or per session) and is cheap next to rendering
frames. Images are float32 (H, W); coordinates are (y, x) in pixels.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "shared_data_dir",
    "load_footprint_bank",
    "footprint_patches",
    "place_centers",
    "smooth_noise",
    "smooth_displacement",
    "draw_vessels",
    "illumination",
    "sample_bilinear",
]

#: half-maximum equivalent diameters below this are treated as degenerate bank entries (px)
_MIN_BANK_DIAMETER = 3.0


def shared_data_dir() -> Path:
    """The folder of real reference data (``$CALIFLOW_SHARED_DATA`` or ``<repo>/../shared/data``)."""
    env = os.environ.get("CALIFLOW_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


@lru_cache(maxsize=2)
def load_footprint_bank(bank: str = "DG") -> np.ndarray | None:
    """Real neuron footprints from CaliAli's simulator data, or None when absent.

    Parameters
    ----------
    bank : "DG" (``A.mat``, 1137 dentate-gyrus cells, 50 x 50 px) or "CA1" (``A2.mat``, 244 cells,
        31 x 31 px).

    Returns
    -------
    ndarray (N, h, w) float32, each footprint clipped at 0 and scaled to maximum 1; entries
    whose half-maximum area is degenerate are dropped.
    """
    import scipy.io

    name = {"DG": "A.mat", "CA1": "A2.mat"}[bank]
    path = shared_data_dir() / "caliali_sim_footprints" / name
    if not path.is_file():
        return None
    a = np.asarray(scipy.io.loadmat(str(path))["A"], dtype=np.float32)   # (h, w, N)
    a = np.moveaxis(a, -1, 0).clip(0, None)
    peak = a.reshape(len(a), -1).max(axis=1)
    a = a[peak > 0] / peak[peak > 0, None, None]
    diam = 2 * np.sqrt((a >= 0.5).sum(axis=(1, 2)) / np.pi)
    return np.ascontiguousarray(a[diam >= _MIN_BANK_DIAMETER])


def _half_max_diameter(a: np.ndarray) -> np.ndarray:
    """Equivalent diameter (px) of the area above half maximum, per image of (N, h, w)."""
    return 2 * np.sqrt((a >= 0.5 * a.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2)) / np.pi)


def _gaussian_patches(n: int, diam: np.ndarray, dendrite_weight: float, rng: np.random.Generator,
                      size: int) -> np.ndarray:
    """Anisotropic Gaussian somata with an optional faint dendrite-like extension, (n, size, size)."""
    sigma = diam / 2.3548
    elong = np.clip(1 + 0.15 * rng.standard_normal(n), 0.7, 1.5)
    s_major, s_minor = sigma * np.sqrt(elong), sigma / np.sqrt(elong)
    theta = rng.uniform(0, np.pi, n)
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - c
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = xx * cos + yy * sin
    v = -xx * sin + yy * cos
    soma = np.exp(-0.5 * ((u / s_major[:, None, None]) ** 2 + (v / s_minor[:, None, None]) ** 2))
    if dendrite_weight > 0:
        # a thin elongated lobe leaving the soma in a random direction
        phi = rng.uniform(0, 2 * np.pi, n)
        length = sigma * rng.uniform(2.0, 3.5, n)
        cp, sp = np.cos(phi)[:, None, None], np.sin(phi)[:, None, None]
        ud = xx * cp + yy * sp - (sigma[:, None, None] + 0.5 * length[:, None, None])
        vd = -xx * sp + yy * cp
        lobe = np.exp(-0.5 * ((ud / (0.5 * length[:, None, None])) ** 2 + (vd / (0.35 * sigma[:, None, None])) ** 2))
        w = dendrite_weight * rng.uniform(0.5, 1.5, n)[:, None, None]
        soma = soma + w * lobe
    return soma.astype(np.float32)


def footprint_patches(n: int, *, diameter: float, size_jitter: float, source: str, bank: str,
                      dendrite_weight: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Draw ``n`` neuron footprints centred in square patches.

    Parameters
    ----------
    n : number of footprints.
    diameter : median footprint diameter at half maximum (px).
    size_jitter : relative std of the per-neuron diameter.
    source : "real", "gaussian" or "auto" (real when the bank file is present).
    bank : real bank name, "DG" or "CA1".
    dendrite_weight : weight of the dendrite-like lobe of Gaussian footprints.
    rng : random generator.

    Returns
    -------
    patches : (n, P, P) float32, maximum 1, centroid near the patch centre.
    used : "real" or "gaussian".
    """
    from califlow.errors import InputError

    diam = diameter * np.clip(1 + size_jitter * rng.standard_normal(n), 0.6, 1.6)
    size = int(2 * np.ceil(2.2 * diameter * 1.6) + 1)
    real = load_footprint_bank(bank) if source in ("real", "auto") else None
    if source == "real" and real is None:
        raise InputError(f"footprint_source='real' but the footprint bank is missing: "
                         f"{shared_data_dir() / 'caliali_sim_footprints'} (set CALIFLOW_SHARED_DATA)")
    if real is None:
        return _gaussian_patches(n, diam, dendrite_weight, rng, size), "gaussian"
    pick = rng.integers(0, len(real), n)
    rot = rng.integers(0, 4, n)
    flip = rng.integers(0, 2, n)
    bank_diam = _half_max_diameter(real)
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):                                    # loop over neurons (one-time anatomy)
        a = np.rot90(real[pick[i]], rot[i])
        a = a[:, ::-1] if flip[i] else a
        f = diam[i] / bank_diam[pick[i]]
        a = cv2.resize(np.ascontiguousarray(a), None, fx=f, fy=f,
                       interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
        a = a.clip(0, None)
        a[a < 0.02 * a.max()] = 0
        cy, cx = ndimage.center_of_mass(a)
        # re-centre the centroid on the patch centre (sub-pixel) while copying into the patch
        c = (size - 1) / 2
        m = np.float32([[1, 0, c - cx], [0, 1, c - cy]])
        out[i] = cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
        out[i] /= max(out[i].max(), 1e-6)
    return out, "real"


def place_centers(n: int, height: int, width: int, *, margin: float, min_spacing: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Uniform random centres (n, 2) (y, x) inside the FOV with a minimum spacing (dart throwing).

    The spacing is relaxed by 10 % each time the FOV cannot hold ``n`` centres, so the call
    always returns ``n`` points.
    """
    spacing = float(min_spacing)
    lo = np.array([margin, margin])
    hi = np.array([height - 1 - margin, width - 1 - margin])
    for _ in range(40):
        cand = lo + rng.random((30 * n + 100, 2)) * (hi - lo)
        kept = np.empty((n, 2))
        count = 0
        for p in cand:                                  # greedy acceptance (one-time anatomy)
            if count == 0 or np.min(np.sum((kept[:count] - p) ** 2, axis=1)) >= spacing ** 2:
                kept[count] = p
                count += 1
                if count == n:
                    return kept
        spacing *= 0.9
    raise ValueError(f"cannot place {n} neurons in a {height}x{width} FOV")


def smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """White noise smoothed by a Gaussian of width ``sigma`` (px), zero mean, unit std, float32.

    Large widths are computed on a coarse grid and upsampled (the result is smooth anyway).
    """
    h, w = shape
    f = max(1, int(sigma // 6))
    hc, wc = h // f + 8, w // f + 8
    z = rng.standard_normal((hc, wc)).astype(np.float32)
    z = ndimage.gaussian_filter(z, sigma / f, mode="wrap")
    if f > 1:
        # cubic-spline upsampling: smooth derivatives (bicubic convolution leaves ripples of
        # the grid period in the gradient, i.e. in displacement fields built from it)
        z = ndimage.zoom(z, f, order=3, mode="grid-wrap", grid_mode=True)
    z = z[:h, :w]
    z = z - z.mean()
    return (z / max(float(z.std()), 1e-12)).astype(np.float32)


def smooth_displacement(shape: tuple[int, int], sigma: float, amplitude: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Smooth displacement field (2, H, W) float32 = gradient of smoothed noise, max norm ``amplitude`` px."""
    if amplitude <= 0:
        return np.zeros((2, *shape), np.float32)
    z = smooth_noise(shape, sigma, rng)
    gy, gx = np.gradient(z)
    d = np.stack([gy, gx]).astype(np.float32)
    norm = np.sqrt((d ** 2).sum(axis=0)).max()
    return d * np.float32(amplitude / max(float(norm), 1e-12))


def _vessel_path(start: np.ndarray, angle: float, length: float, curl: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Smooth random curve (n, 2) (y, x) of ``length`` px from ``start`` in direction ``angle``."""
    n = max(int(length / 2), 2)
    turn = ndimage.gaussian_filter1d(rng.standard_normal(n) * curl, 4)
    theta = angle + np.cumsum(turn)
    steps = 2.0 * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    return start + np.cumsum(steps, axis=0)


def draw_vessels(shape: tuple[int, int], n_trees: int, width_range: tuple[float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """Branching dark-vessel map (H, W) float32 in [0, 1] (1 = vessel centre, full absorption).

    Each tree is a smooth random curve crossing the canvas with 1-3 branches of decreasing
    width; curves are rasterised at 4x resolution, area-averaged and softly blurred.
    """
    h, w = shape
    up = 4
    out = np.zeros((h, w), np.float32)
    size = float(max(h, w))
    for _ in range(n_trees):
        start = rng.uniform([0, 0], [h, w])
        angle = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(*width_range)
        segments = [(_vessel_path(start, angle, rng.uniform(0.6, 1.3) * size, 0.06, rng), width)]
        # extend backwards too, so the trunk crosses the field of view
        segments.append((_vessel_path(start, angle + np.pi, rng.uniform(0.3, 0.8) * size, 0.06, rng), width))
        for _b in range(int(rng.integers(1, 4))):
            trunk = segments[0][0]
            origin = trunk[int(rng.integers(len(trunk) // 5, max(len(trunk) // 5 + 1, 4 * len(trunk) // 5)))]
            bw = max(width_range[0], width * rng.uniform(0.4, 0.7))
            ba = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
            segments.append((_vessel_path(origin, ba, rng.uniform(0.2, 0.5) * size, 0.1, rng), bw))
        for path, wd in segments:
            canvas = np.zeros((h * up, w * up), np.uint8)
            pts = np.round(path[:, ::-1] * up + (up - 1) / 2).astype(np.int32)
            cv2.polylines(canvas, [pts], False, 255, thickness=max(1, int(round(wd * up))), lineType=cv2.LINE_8)
            img = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            img = cv2.GaussianBlur(img, (0, 0), max(0.6, wd / 4))
            np.maximum(out, img / max(float(img.max()), 1e-6), out=out)
    return out


def illumination(shape: tuple[int, int], vignetting: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor-fixed illumination (H, W) float32: 1 at an off-centre optical axis, 1 - vignetting at corners."""
    h, w = shape
    cy = (h - 1) / 2 + rng.uniform(-0.08, 0.08) * h
    cx = (w - 1) / 2 + rng.uniform(-0.08, 0.08) * w
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    r2max = max((0 - cy) ** 2, (h - 1 - cy) ** 2) + max((0 - cx) ** 2, (w - 1 - cx) ** 2)
    return (1 - vignetting * r2 / r2max).astype(np.float32)


def sample_bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` (H, W) at float positions ``y``, ``x`` of any equal shape.

    Outside the image the border value is replicated. Positions are laid out in rows of at
    most 4096 for OpenCV (whose maps must be smaller than 32767 px per side).
    """
    shape = np.shape(y)
    yf = np.asarray(y, np.float32).ravel()
    xf = np.asarray(x, np.float32).ravel()
    n = yf.size
    cols = min(4096, max(n, 1))
    rows = -(-n // cols)
    pad = rows * cols - n
    my = np.pad(yf, (0, pad)).reshape(rows, cols)
    mx = np.pad(xf, (0, pad)).reshape(rows, cols)
    out = cv2.remap(np.ascontiguousarray(img, dtype=np.float32), mx, my, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.ravel()[:n].reshape(shape)
