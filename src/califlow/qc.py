"""Quality-control figures for the report (matplotlib, Agg backend, PNG files).

- :func:`session_figure`: a session's projections (mean, blood vessels, correlation, PNR)
  and its motion trace;
- :func:`footprints_figure`: every cell's contour on the global correlation image, numbered
  by rank (cells are ordered by SNR);
- :func:`traces_figure`: the strongest cells' traces across all sessions with session
  boundaries;
- :func:`raster_figure`: per-session activity raster (events per cell and frame);
- :func:`presence_figure`: which cell is active in which session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["session_figure", "footprints_figure", "traces_figure", "raster_figure", "presence_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from califlow.io.store import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def _robust(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def session_figure(projections: dict, motion: np.ndarray, fps: float, title: str, path) -> Path:
    """Projections (mean, bv, cn, pnr) and the rigid motion trace of one session.

    Parameters
    ----------
    projections : dict of name -> (H, W) array
    motion : ndarray (T, 2)
        (dy, dx) per frame in pixels.
    """
    plt = _plt()
    names = [n for n in ("mean", "bv", "cn", "pnr") if n in projections]
    labels = {"mean": "mean", "bv": "blood vessels", "cn": "correlation (Cn)", "pnr": "PNR"}
    fig = plt.figure(figsize=(3.2 * len(names), 5.6))
    grid = fig.add_gridspec(2, len(names), height_ratios=[3, 1.4])
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[0, i])
        img = np.asarray(projections[name], dtype=float)
        lo, hi = _robust(img)
        im = ax.imshow(img, cmap="gray" if name in ("mean", "bv") else "magma", vmin=lo, vmax=hi)
        ax.set_title(labels[name], fontsize=10)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    ax = fig.add_subplot(grid[1, :])
    t = np.arange(len(motion)) / fps
    if len(motion):
        ax.plot(t, motion[:, 0], lw=0.8, label="dy")
        ax.plot(t, motion[:, 1], lw=0.8, label="dx")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("shift (px)")
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.set_xlim(0, t[-1] if len(t) else 1)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def footprints_figure(A: np.ndarray, cn: np.ndarray, path, title: str = "", max_labels: int = 60) -> Path:
    """Contours of footprints ``A`` (K, H, W) at 40 % of each maximum on the correlation image."""
    plt = _plt()
    H, W = cn.shape
    fig, ax = plt.subplots(figsize=(6.5, 6.5 * H / max(W, 1)))
    lo, hi = _robust(cn)
    ax.imshow(cn, cmap="gray", vmin=lo, vmax=hi)
    colors = plt.get_cmap("tab20")
    for k, a in enumerate(A):
        peak = a.max()
        if peak <= 0:
            continue
        ax.contour(a, levels=[0.4 * peak], colors=[colors(k % 20)], linewidths=0.8)
        if k < max_labels:
            import matplotlib.patheffects as pe

            y, x = np.unravel_index(np.argmax(a), a.shape)
            ax.text(x, y, str(k), color="yellow", fontsize=6.5, ha="center", va="center", fontweight="bold",
                    path_effects=[pe.withStroke(linewidth=1.5, foreground="black")])
    ax.set_title(title or f"{len(A)} cells on the correlation image (numbers = SNR rank)", fontsize=10)
    ax.set_axis_off()
    return _save(fig, path)


def traces_figure(C: np.ndarray, sessions: Sequence, path, n_cells: int = 12, title: str = "") -> Path:
    """Traces of the first ``n_cells`` cells (the strongest: cells are SNR-ordered) over all sessions."""
    plt = _plt()
    n = min(n_cells, len(C))
    fig, ax = plt.subplots(figsize=(11, 0.55 * max(n, 1) + 1.2))
    for i in range(n):
        c = C[i].astype(float)
        span = np.ptp(c) or 1.0
        ax.plot(np.arange(c.size), (c - c.min()) / span * 0.9 - i, lw=0.6, color="k")
    for s in sessions:
        ax.axvline(s.start, color="tab:red", lw=0.6, alpha=0.6)
        ax.text((s.start + s.stop) / 2, 1.05, s.name, ha="center", va="bottom", fontsize=8, color="tab:red")
    ax.set_yticks(-np.arange(n) + 0.45)
    ax.set_yticklabels([f"cell {i}" for i in range(n)], fontsize=7)
    ax.set_xlabel("frame of the concatenation")
    ax.set_xlim(0, C.shape[1])
    ax.set_ylim(-n + 0.8, 1.4)
    ax.set_title(title or "strongest cells across sessions (each trace scaled to its range)", fontsize=10)
    return _save(fig, path)


def raster_figure(S: np.ndarray, sessions: Sequence, path, title: str = "", threshold: float = 0.0) -> Path:
    """Activity raster: one row per cell, events (S >= threshold, > 0) marked, one panel per session."""
    from califlow.export import event_mask

    plt = _plt()
    fig, axes = plt.subplots(1, len(sessions), figsize=(3.2 * len(sessions), 0.05 * len(S) + 2.5),
                             sharey=True, squeeze=False)
    for ax, s in zip(axes[0], sessions):
        seg = S[:, s.start:s.stop]
        cells, frames = np.nonzero(event_mask(seg, threshold))
        ax.scatter(frames / s.fps, cells, s=1.5, marker="|", color="k", linewidths=0.6)
        ax.set_title(s.name, fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_xlim(0, (s.stop - s.start) / s.fps)
    axes[0][0].set_ylabel("cell (SNR rank)")
    axes[0][0].set_ylim(len(S) - 0.5, -0.5)
    fig.suptitle(title or "events per session", fontsize=10)
    return _save(fig, path)


def presence_figure(S: np.ndarray, sessions: Sequence, path, title: str = "", threshold: float = 0.0) -> Path:
    """Cells × sessions matrix: event rate (events per minute) of each cell in each session."""
    from califlow.export import event_mask

    plt = _plt()
    rates = np.stack([event_mask(S[:, s.start:s.stop], threshold).sum(axis=1) / ((s.stop - s.start) / s.fps / 60.0)
                      for s in sessions], axis=1) if len(S) else np.zeros((0, len(sessions)))
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(sessions), 0.06 * len(S) + 2.2))
    im = ax.imshow(rates, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(sessions)))
    ax.set_xticklabels([s.name for s in sessions], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("cell (SNR rank)")
    fig.colorbar(im, ax=ax, label="events / min")
    present = (rates > 0).sum(axis=0)
    ax.set_title(title or ("cells active per session: " + ", ".join(map(str, present))), fontsize=9)
    return _save(fig, path)
