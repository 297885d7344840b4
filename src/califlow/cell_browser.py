"""The cell browser: one static HTML page per animal to review and curate its cells.

The page (``results/{animal}/cells.html``) needs no server and no network: the data are
embedded as JSON, the images as PNG data URLs.  It shows every cell's half-maximum contour
on the global correlation image, coloured by its curation status; clicking a contour or a
row of the metrics table shows the cell's footprint in every session, its trace across the
sessions (session boundaries marked) and its metrics.  Statuses can be changed on the page
and downloaded as a manual curation table (``cell,status,reason``,
:func:`califlow.curation.read_manual`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from califlow.cell_metrics import SHAPE_LEVEL
from califlow.io.store import atomic_output, open_group

__all__ = ["MAX_TRACE_VALUES", "browser_data", "browser_html", "write_cell_browser"]

#: Trace samples embedded over all cells (min-max envelopes); caps the page size (~5 values per 4 bytes).
MAX_TRACE_VALUES = 400_000
#: Crop half-width around a cell, in neuron diameters (footprint bounding box otherwise).
CROP_DIAMETERS = 1.5
_TRACE_SCALE = 999


def png_data_url(image: np.ndarray, lo: float | None = None, hi: float | None = None,
                 colormap: int | None = None) -> str:
    """A 2-D float image as a PNG data URL, scaled to 8 bits between ``lo`` and ``hi``.

    ``lo``/``hi`` default to the 1st and 99.5th percentiles; ``colormap`` is an OpenCV colormap.
    """
    img = np.nan_to_num(np.asarray(image, np.float32))
    if lo is None or hi is None:
        lo, hi = (float(v) for v in np.percentile(img, [1, 99.5])) if img.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    u8 = np.clip((img - lo) * scale, 0, 255).astype(np.uint8)
    if colormap is not None:
        u8 = cv2.applyColorMap(u8, colormap)
    ok, buf = cv2.imencode(".png", u8)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def contours(a: np.ndarray, level: float = SHAPE_LEVEL) -> list[list[list[float]]]:
    """Outlines of footprint ``a`` (H, W) at ``level`` x its maximum: polygons of [x, y] pixel corners."""
    top = float(a.max()) if a.size else 0.0
    if top <= 0:
        return []
    mask = (a >= level * top).astype(np.uint8)
    found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[[float(x) + 0.5, float(y) + 0.5] for x, y in c[:, 0, :]] for c in found if len(c) >= 2]


def _envelope(C: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin minimum and maximum of every row of ``C`` (K, T): two (K, n_bins) arrays."""
    T = C.shape[1]
    edges = np.unique(np.linspace(0, T, min(n_bins, T) + 1).astype(int))[:-1]
    return np.minimum.reduceat(C, edges, axis=1), np.maximum.reduceat(C, edges, axis=1)


def _scaled(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[list[int]]:
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.rint((x - lo) / span * _TRACE_SCALE).clip(0, _TRACE_SCALE).astype(int).tolist()


def trace_data(C_raw: np.ndarray, C: np.ndarray | None) -> dict:
    """Decimated traces for the page: min/max envelope of ``C_raw`` and of ``C`` (K, T), scaled per cell to 0..999."""
    K, T = C_raw.shape
    n_bins = int(max(100, min(1000, MAX_TRACE_VALUES // max(1, 4 * K))))
    rmin, rmax = _envelope(C_raw, n_bins)
    lo, hi = rmin.min(axis=1, keepdims=True), rmax.max(axis=1, keepdims=True)
    out = {"n_frames": int(T), "n_bins": int(rmin.shape[1]), "raw_min": _scaled(rmin, lo, hi),
           "raw_max": _scaled(rmax, lo, hi)}
    if C is not None:
        cmin, cmax = _envelope(C, n_bins)
        out["den_min"], out["den_max"] = _scaled(cmin, lo, hi), _scaled(cmax, lo, hi)
    return out


def crop_box(a: np.ndarray, diameter: float) -> tuple[slice, slice]:
    """A square window (rows, columns) around footprint ``a`` (H, W).

    It holds the footprint's support and is at least 2 x CROP_DIAMETERS x ``diameter`` (px) wide.
    """
    H, W = a.shape
    ys, xs = np.nonzero(a > 0.2 * a.max()) if a.max() > 0 else (np.array([H // 2]), np.array([W // 2]))
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(CROP_DIAMETERS * diameter, (ys.max() - ys.min()) / 2 + 2, (xs.max() - xs.min()) / 2 + 2)
    half = int(math.ceil(half))
    y0 = int(np.clip(round(cy) - half, 0, max(0, H - 2 * half - 1)))
    x0 = int(np.clip(round(cx) - half, 0, max(0, W - 2 * half - 1)))
    return slice(y0, min(H, y0 + 2 * half + 1)), slice(x0, min(W, x0 + 2 * half + 1))


def session_crops(A: np.ndarray, A_sessions, n_sessions: int, diameter: float) -> list[dict]:
    """Per cell: the crop window and a viridis PNG of its footprint in every session.

    Each cell's crops share one scale (0 .. the cell's largest per-session peak), so a
    footprint that fades in a session looks dim there.
    """
    boxes = [crop_box(a, diameter) for a in A]
    crops = [[None] * n_sessions for _ in boxes]
    for j in range(n_sessions):
        As = A_sessions(j)
        for k, (ys, xs) in enumerate(boxes):
            crops[k][j] = As[k, ys, xs]
    out = []
    for k, (ys, xs) in enumerate(boxes):
        top = max(float(np.max(c)) for c in crops[k]) if crops[k] else 0.0
        out.append({"box": [ys.start, ys.stop, xs.start, xs.stop],
                    "png": [png_data_url(c, 0.0, top, cv2.COLORMAP_VIRIDIS) for c in crops[k]]})
    return out


def _background(group, aligned_path) -> np.ndarray:
    if "Cn" in group:
        return np.asarray(group["Cn"][...], np.float32)
    if aligned_path is not None:
        from califlow.cnmfe.data import AlignedStore

        return AlignedStore(aligned_path).global_projections()[0]
    return np.asarray(group["A"][...], np.float32).max(axis=0)


def _cell_rows(cells: pd.DataFrame) -> tuple[list[str], list[list]]:
    cols = list(cells.columns)
    rows = cells.astype(object).where(pd.notna(cells), None).values.tolist()
    return cols, [[(round(v, 4) if isinstance(v, float) else v) for v in row] for row in rows]


def browser_data(cnmfe_path: str | os.PathLike, cells_path: str | os.PathLike,
                 aligned_path: str | os.PathLike | None = None, *, diameter: float | None = None) -> dict:
    """Everything the page shows, as a JSON-ready dict.

    Parameters
    ----------
    cnmfe_path : ``cnmfe.zarr`` (A (K, H, W), C_raw / C (K, T), optional A_sessions (S, K, H, W), Cn).
    cells_path : ``cells.csv`` (one row per cell, in the order of A).
    aligned_path : ``aligned.zarr``, for the background image when ``cnmfe.zarr`` has no Cn.
    diameter : neuron diameter (px) for the crop size; by default from the footprints' areas.
    """
    g = open_group(cnmfe_path)
    A = np.asarray(g["A"][...], np.float32)
    cells = pd.read_csv(cells_path, keep_default_na=False, na_values=[""])
    if len(cells) != A.shape[0]:
        raise ValueError(f"{cells_path}: {len(cells)} rows for {A.shape[0]} cells in {cnmfe_path}")
    sessions = [{"name": str(s["name"]), "start": int(s["start"]), "stop": int(s["stop"])} for s in g.attrs["sessions"]]
    if diameter is None:
        areas = cells["area_px"].to_numpy(float) if "area_px" in cells and len(cells) else np.array([50.0])
        diameter = float(2 * np.sqrt(np.nanmedian(areas) / np.pi))
    if "A_sessions" in g:
        A_sessions = lambda j: np.asarray(g["A_sessions"][j], np.float32)  # noqa: E731
    else:
        A_sessions = lambda j: A  # noqa: E731
    columns, rows = _cell_rows(cells)
    C = np.asarray(g["C"][...], np.float32) if "C" in g else None
    C_raw = np.asarray(g["C_raw"][...], np.float32) if "C_raw" in g else C
    H, W = A.shape[1:]
    return {"shape": [int(H), int(W)], "image": png_data_url(_background(g, aligned_path)),
            "sessions": sessions, "columns": columns, "rows": rows,
            "contours": [contours(a) for a in A],
            "crops": session_crops(A, A_sessions, len(sessions), diameter),
            "traces": trace_data(C_raw, C) if C_raw is not None and A.shape[0] else None}


def _template(name: str) -> str:
    return resources.files("califlow").joinpath("templates", name).read_text(encoding="utf-8")


def browser_html(data: dict, title: str = "califlow cell browser") -> str:
    """The page: the template with ``data`` embedded as JSON (``</`` escaped)."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (_template("cell_browser.html").replace("{{title}}", html.escape(title))
            .replace("{{style}}", _template("cell_browser.css"))
            .replace("{{script}}", _template("cell_browser.js"))
            .replace("{{data}}", payload))


def write_cell_browser(out_path: str | os.PathLike, cnmfe_path: str | os.PathLike, cells_path: str | os.PathLike,
                       aligned_path: str | os.PathLike | None = None, *, title: str | None = None,
                       diameter: float | None = None) -> Path:
    """Write the cell browser of an extraction to ``out_path`` (atomically); returns the path."""
    data = browser_data(cnmfe_path, cells_path, aligned_path, diameter=diameter)
    page = browser_html(data, title or f"califlow cells: {Path(cnmfe_path).parent.name}")
    with atomic_output(out_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(out_path)
