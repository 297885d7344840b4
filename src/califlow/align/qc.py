"""QC figures of the alignment: RGB overlays of sessions at every stage.

Three sessions (first, middle, last) are shown as the red, green and blue channels of one
image: where they are aligned, structures are grey/white; misalignment shows as coloured
fringes (two sessions: magenta/green, like MATLAB's imfuse).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from califlow.align.pipeline import STAGES, Alignment

__all__ = ["overlay_rgb", "save_overlays"]


def overlay_rgb(images: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) float in [0, 1] of 2 or 3 images (n, H, W) (NaN → 0)."""
    imgs = np.nan_to_num(np.asarray(images, np.float32), nan=0.0)
    out = []
    for im in imgs:
        lo, hi = np.percentile(im, [1, 99.5])
        out.append(np.clip((im - lo) / max(hi - lo, 1e-9), 0, 1))
    if len(out) == 1:
        return np.stack([out[0]] * 3, axis=-1)
    if len(out) == 2:
        return np.stack([out[0], out[1], out[0]], axis=-1)
    return np.stack(out[:3], axis=-1)


def save_overlays(alignment: Alignment, path: str | os.PathLike, *, stages: Sequence[str] | None = None,
                  channels: Sequence[str] = ("bv", "neuron"), title: str | None = None) -> None:
    """Write a PNG grid: one column per stage, one row per channel, RGB overlays of sessions.

    Parameters
    ----------
    alignment : Alignment with ``qc`` images (as returned by :func:`align_sessions`)
    path : output PNG path
    stages : stages to show (default every stage that ran, in order: before → after)
    channels : registration channels to show
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not alignment.qc:
        raise ValueError("save_overlays: this Alignment has no QC images (loaded from disk?); run align_sessions")
    stages = [s for s in (stages or STAGES) if s in alignment.qc]
    n_sessions = len(next(iter(alignment.qc[stages[0]].values())))
    fig, axes = plt.subplots(len(channels), len(stages), figsize=(3.2 * len(stages), 3.3 * len(channels)),
                             squeeze=False)
    for c, ch in enumerate(channels):
        for s, st in enumerate(stages):
            ax = axes[c, s]
            ax.imshow(overlay_rgb(alignment.qc[st][ch]), interpolation="nearest")
            m = alignment.metrics.get(st, {}).get(ch, {})
            ax.set_title(f"{st} · {ch}\ncorr {m.get('mean_corr', float('nan')):.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    who = ", ".join(alignment.info.get("qc_sessions", [])[:n_sessions])
    colours = "R, G, B" if n_sessions >= 3 else "magenta, green"
    fig.suptitle(title or f"alignment ({alignment.path}); sessions {who} as {colours}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=90)
    plt.close(fig)
