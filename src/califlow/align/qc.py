"""QC figures of the alignment: colour overlays of the sessions at every stage.

Every session the alignment recorded (``alignment.qc``, names in ``info["qc_sessions"]``)
gets its own colour (:func:`session_colours`); the overlay is the colour-weighted mean of
the sessions' normalised images, so where they are aligned structures are grey/white and
misalignment shows as fringes in the colour of the displaced session (two sessions:
magenta/green, like MATLAB's imfuse; three: red, green, blue). A legend names the colour of
each session.
"""

from __future__ import annotations

import colorsys
import os
import textwrap
from collections.abc import Sequence

import numpy as np

from califlow.align.pipeline import STAGES, Alignment

__all__ = ["session_colours", "overlay_rgb", "overlay_figure", "save_overlays"]


def session_colours(n: int) -> np.ndarray:
    """One RGB colour per session, (n, 3) in [0, 1], whose sum is close to grey.

    One session: white; two: magenta and green; more: hues evenly spaced around the colour
    wheel (three: red, green, blue).
    """
    if n <= 1:
        return np.ones((max(n, 0), 3))
    if n == 2:
        return np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    return np.array([colorsys.hsv_to_rgb(i / n, 1.0, 1.0) for i in range(n)])


def _normalised(im: np.ndarray) -> np.ndarray:
    finite = im[np.isfinite(im)]
    if finite.size == 0:
        return np.zeros(im.shape, np.float32)
    lo, hi = np.percentile(finite, [1, 99.5])
    return np.clip((np.nan_to_num(im, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)


def overlay_rgb(images: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
    """RGB (H, W, 3) float in [0, 1]: colour-weighted mean of n images (n, H, W).

    Parameters
    ----------
    images : ndarray (n, H, W)
        One image per session (NaN where the session does not cover the pixel).
    colours : ndarray (n, 3), optional
        Colour of each session (default :func:`session_colours`). Each RGB channel is
        divided by the sum of the colours in it, so equal images give grey.
    """
    imgs = np.asarray(images, np.float32)
    cols = session_colours(len(imgs)) if colours is None else np.asarray(colours, float)
    norm = np.stack([_normalised(im) for im in imgs])
    weight = np.maximum(cols.sum(axis=0), 1e-9)
    return np.clip(np.einsum("nhw,nc->hwc", norm, cols) / weight, 0, 1)


def _session_names(alignment: Alignment, n: int) -> list[str]:
    names = list(alignment.info.get("qc_sessions", []))[:n]
    return names + [f"session {i}" for i in range(len(names), n)]


def _wrapped(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points."""
    chars = max(int(width_in * 72 / (0.6 * fontsize)), 20)
    return "\n".join(textwrap.wrap(text, chars, break_on_hyphens=False))


def overlay_figure(alignment: Alignment, *, stages: Sequence[str] | None = None,
                   channels: Sequence[str] = ("bv", "neuron"), title: str | None = None):
    """The overlay grid as a matplotlib Figure: one column per stage, one row per channel.

    Parameters
    ----------
    alignment : Alignment
        With ``qc`` images (as returned by :func:`califlow.align.align_sessions`).
    stages : sequence of str, optional
        Stages to show (default every stage that ran, in order: before → after).
    channels : sequence of str
        Registration channels to show.
    title : str, optional
        Figure title (wrapped to the figure's width); default names the path and sessions.

    Returns
    -------
    matplotlib.figure.Figure
        One overlay image per panel and a figure legend with one entry (colour) per session.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if not alignment.qc:
        raise ValueError("save_overlays: this Alignment has no QC images (loaded from disk?); run align_sessions")
    stages = [s for s in (stages or STAGES) if s in alignment.qc]
    n_sessions = len(next(iter(alignment.qc[stages[0]].values())))
    names, colours = _session_names(alignment, n_sessions), session_colours(n_sessions)
    width = max(3.4 * len(stages), 4.8)
    fig, axes = plt.subplots(len(channels), len(stages), figsize=(width, 3.4 * len(channels) + 0.8),
                             squeeze=False, layout="constrained")
    for c, ch in enumerate(channels):
        for s, st in enumerate(stages):
            ax = axes[c, s]
            ax.imshow(overlay_rgb(alignment.qc[st][ch], colours), interpolation="nearest")
            m = alignment.metrics.get(st, {}).get(ch, {})
            ax.set_title(f"{st} · {ch}\ncorr {m.get('mean_corr', float('nan')):.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(facecolor=col, edgecolor="black", linewidth=0.5, label=name)
               for name, col in zip(names, colours)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(n_sessions, 4), fontsize=8,
               title="sessions (grey = aligned)", title_fontsize=8, frameon=False)
    text = title or f"alignment ({alignment.path}) of {n_sessions} sessions"
    fig.suptitle(_wrapped(text, width, 10), fontsize=10)
    return fig


def save_overlays(alignment: Alignment, path: str | os.PathLike, *, stages: Sequence[str] | None = None,
                  channels: Sequence[str] = ("bv", "neuron"), title: str | None = None) -> None:
    """Write the overlay grid of :func:`overlay_figure` as a PNG.

    Parameters
    ----------
    alignment : Alignment with ``qc`` images (as returned by :func:`align_sessions`)
    path : output PNG path
    stages : stages to show (default every stage that ran, in order: before → after)
    channels : registration channels to show
    title : figure title (default names the path and the number of sessions)
    """
    import matplotlib.pyplot as plt

    fig = overlay_figure(alignment, stages=stages, channels=channels, title=title)
    fig.savefig(os.fspath(path), dpi=90, bbox_inches="tight")
    plt.close(fig)
