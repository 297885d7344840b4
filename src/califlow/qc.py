"""Quality-control figures for the report (matplotlib, Agg backend, PNG files).

- :func:`session_figure`: a session's projections (mean, blood vessels, correlation, PNR)
  and its motion trace;
- :func:`footprints_figure`: every cell's contour on the global correlation image, numbered
  by rank (cells are ordered by SNR);
- :func:`traces_figure`: the strongest cells' traces across all sessions with session
  boundaries;
- :func:`raster_figure`: per-session activity raster (events per cell and frame);
- :func:`presence_figure`: which cell is active in which session;
- :func:`configuration_page`: the resolved configuration and the sessions sheet (HTML).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["session_figure", "footprints_plot", "footprints_figure", "traces_figure", "raster_figure",
           "presence_figure", "configuration_page"]


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


def _fit_suptitle(fig, text: str, fontsize: float, margin: float = 0.02) -> int:
    """Set ``fig``'s title to ``text``, wrapped onto as many lines as it takes to fit the figure's width.

    Returns
    -------
    int
        The number of lines of the title.
    """
    import textwrap

    title = fig.suptitle(text, fontsize=fontsize)
    renderer = fig.canvas.get_renderer()
    usable = fig.bbox.width * (1 - 2 * margin)
    chars = len(text)
    while chars > 8 and title.get_window_extent(renderer).width > usable:
        chars = max(8, min(chars - 1, int(chars * usable / title.get_window_extent(renderer).width)))
        title.set_text("\n".join(textwrap.wrap(text, chars, break_on_hyphens=False)))
    return title.get_text().count("\n") + 1


def session_figure(projections: dict, motion: np.ndarray, fps: float, title: str, path) -> Path:
    """Projections (mean, bv, cn, pnr) and the rigid motion trace of one session.

    Parameters
    ----------
    projections : dict of name -> (H, W) array
    motion : ndarray (T, 2)
        (dy, dx) per frame in pixels.
    title : str
        Figure title; wrapped to the figure's width (the figure grows by the extra lines).
    """
    plt = _plt()
    names = [n for n in ("mean", "bv", "cn", "pnr") if n in projections]
    labels = {"mean": "mean", "bv": "blood vessels", "cn": "correlation (Cn)", "pnr": "PNR"}
    fig = plt.figure(figsize=(3.2 * len(names), 5.6))
    line_in = 11 * 1.3 / 72                               # one title line at 11 pt, in inches
    extra = (_fit_suptitle(fig, title, 11) - 1) * line_in
    fig.set_figheight(5.6 + extra)
    top = 1 - (0.12 * 5.6 + extra) / (5.6 + extra)        # the default 0.88 for a one-line title
    grid = fig.add_gridspec(2, len(names), height_ratios=[3, 1.4], top=top)
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
    return _save(fig, path)


def _label_spot(a: np.ndarray, level: float, text_px: tuple[float, float]) -> tuple[float, float, str, str]:
    """Where a footprint's number goes: (x, y, ha, va) just off its contour.

    Upper right of the contour by default; left of it or below it where the number
    (``text_px`` = its width and height in image pixels) would leave the image.
    """
    y, x = np.unravel_index(np.argmax(a), a.shape)
    r = 0.7 * np.sqrt(np.count_nonzero(a >= level) / np.pi)
    H, W = a.shape
    ha, tx = ("left", x + r) if x + r + text_px[0] <= W - 1 else ("right", x - r)
    va, ty = ("bottom", y - r) if y - r - text_px[1] >= 0 else ("top", y + r)
    return float(np.clip(tx, 0, W - 1)), float(np.clip(ty, 0, H - 1)), ha, va


def footprints_plot(A: np.ndarray, cn: np.ndarray, title: str = ""):
    """The footprints figure (see :func:`footprints_figure`) as a matplotlib Figure.

    Every cell with a non-empty footprint gets its contour and its number (its row in
    ``A``: the SNR rank and the cell id of the exports), in yellow with a black outline,
    just off the contour (upper right, or where the image has room) so the cell itself
    stays visible. The font shrinks and the figure grows with the number of cells so that
    every number stays legible.
    """
    import matplotlib.patheffects as pe

    plt = _plt()
    H, W = cn.shape
    K = len(A)
    width = float(np.clip(6.5 * np.sqrt(K / 80), 6.5, 12.0))
    fontsize = float(np.clip(6.5 * np.sqrt(80 / max(K, 1)), 3.5, 6.5)) * width / 6.5
    fig, ax = plt.subplots(figsize=(width, width * H / max(W, 1)))
    lo, hi = _robust(cn)
    ax.imshow(cn, cmap="gray", vmin=lo, vmax=hi)
    colors = plt.get_cmap("tab20")
    stroke = [pe.withStroke(linewidth=1.5, foreground="black")]
    px_per_pt = W / (width * 72)  # image pixels per typographic point
    for k, a in enumerate(A):
        peak = a.max()
        if peak <= 0:
            continue
        ax.contour(a, levels=[0.4 * peak], colors=[colors(k % 20)], linewidths=0.8)
        size = (0.62 * fontsize * len(str(k)) * px_per_pt, fontsize * px_per_pt)
        x, y, ha, va = _label_spot(a, 0.4 * peak, size)
        ax.text(x, y, str(k), color="yellow", fontsize=fontsize, ha=ha, va=va, fontweight="bold",
                path_effects=stroke, clip_on=True)
    ax.set_title(title or f"{K} cells on the correlation image (numbers = SNR rank)", fontsize=10)
    ax.set_axis_off()
    return fig


def footprints_figure(A: np.ndarray, cn: np.ndarray, path, title: str = "") -> Path:
    """Contours of footprints ``A`` (K, H, W) at 40 % of each maximum on the correlation image.

    Every cell is numbered (its SNR rank, as in ``cells.csv`` and the exports); see
    :func:`footprints_plot`.
    """
    return _save(footprints_plot(A, cn, title), path)


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


# --------------------------------------------------------------------------------------------
# the report's "Configuration" page
# --------------------------------------------------------------------------------------------
_PAGE_STYLE = """body{font-family:sans-serif;font-size:13px;margin:1em}
table{border-collapse:collapse;margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#eee}tr.changed td{background:#fff4cc}
code{font-size:12px}"""


def _flat(cfg, schema, prefix: str = "") -> list[tuple[str, object, dict]]:
    """(dotted key, value, schema of the key) of every leaf of a nested config."""
    rows = []
    for key, value in cfg.items():
        sub = (schema.get("properties") or {}).get(key, {})
        if isinstance(value, dict) and sub.get("type") == "object" and "properties" in sub:
            rows += _flat(value, sub, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value, sub))
    return rows


def _value_text(value) -> str:
    import json

    from califlow.io.store import to_jsonable

    return json.dumps(to_jsonable(value))


def _config_table(cfg, defaults, schema) -> list[str]:
    """HTML tables of a resolved config, one per top-level group; changed values highlighted."""
    from html import escape

    default_of = {k: v for k, v, _ in _flat(defaults, schema)}
    groups: dict[str, list[str]] = {}
    for key, value, sub in _flat(cfg, schema):
        used, default = _value_text(value), _value_text(default_of.get(key))
        group = key.split(".")[0] if "." in key else "(top level)"
        cls = ' class="changed"' if used != default else ""
        groups.setdefault(group, []).append(
            f"<tr{cls}><td><code>{escape(key)}</code></td><td><code>{escape(used)}</code></td>"
            f"<td><code>{escape(default)}</code></td><td>{escape(sub.get('description', ''))}</td></tr>")
    out = []
    for group, rows in groups.items():
        out.append(f"<h2>{escape(group)}</h2><table><tr><th>parameter</th><th>value used</th>"
                   "<th>default</th><th>description</th></tr>" + "".join(rows) + "</table>")
    return out


def _sessions_table(sessions) -> str:
    """HTML table of the sessions sheet (a list of row dicts), or '' when there is none."""
    from html import escape

    rows = list(sessions or [])
    if not rows:
        return ""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape('' if r.get(c) is None else str(r.get(c)))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<h2>sessions</h2><table><tr>{head}</tr>{body}</table>"


def configuration_page(cfg, path, sessions=None, title: str = "califlow configuration") -> Path:
    """Write the resolved configuration (and the sessions sheet) as one HTML page.

    Parameters
    ----------
    cfg : mapping
        The resolved configuration the jobs ran with (:func:`califlow.params.resolve_config`).
    path : path
        Output ``.html`` file (written atomically).
    sessions : list of dict, optional
        Rows of the sessions sheet (animal, session, path, ...).
    title : str
        Page heading.

    Returns
    -------
    Path
        ``path``. Each parameter is listed with the value used, the default and the schema's
        description; values that differ from the default are highlighted.
    """
    from html import escape

    from califlow import __version__
    from califlow.io.store import atomic_output
    from califlow.params import config_schema, resolve_config

    schema = config_schema()
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_PAGE_STYLE}</style></head><body><h1>{escape(title)}</h1>",
             f"<p>califlow {escape(__version__)}. Highlighted rows differ from the default. With "
             "<code>general.gSig: auto</code> the gSig each animal ran with is in "
             "<code>results/ANIMAL/neuron_size.json</code>.</p>"]
    parts += _config_table(cfg, resolve_config({}), schema)
    parts.append(_sessions_table(sessions))
    parts.append("</body></html>")
    path = Path(path)
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    return path
