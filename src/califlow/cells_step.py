"""The workflow's ``cell_qc`` step: ``cnmfe.zarr`` + ``aligned.zarr`` -> ``cells.csv``.

``cells.csv`` has one row per cell: the metrics of :mod:`califlow.cell_metrics`, then
``status`` and ``reason`` from :mod:`califlow.curation` (the automatic rules, then the manual
table ``curation.manual`` when it exists).  The exports (NWB, Inscopix cell sets, events)
read the statuses from it, so a changed manual table reruns this step and the exports only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from califlow.cell_metrics import cell_table, surround_masks, surround_traces
from califlow.curation import apply_manual, curate, read_manual
from califlow.export import load_extraction
from califlow.io.store import atomic_output, open_group
from califlow.sizes import DIAMETER_PER_GSIG

__all__ = ["SURROUND_CHUNK_BYTES", "manual_path", "neuron_diameter", "measure_cells", "write_cells_csv"]

log = logging.getLogger("califlow")

#: Bytes of movie read at once by the surround pass (float32 frames).
SURROUND_CHUNK_BYTES = 256 * 2**20


def manual_path(config: Mapping, animal: str) -> Path:
    """The manual curation table of ``animal`` (``curation.manual`` with ``{animal}`` replaced)."""
    return Path(str(config["curation"]["manual"]).replace("{animal}", animal))


def neuron_diameter(config: Mapping) -> float:
    """Neuron diameter (px): ``general.neuron_diameter`` (measured or set), else 3 x gSig."""
    gen = config["general"]
    d = gen.get("neuron_diameter")
    return float(d) if isinstance(d, (int, float)) and d > 0 else DIAMETER_PER_GSIG * float(gen["gSig"])


def _extraction(cnmfe_path) -> dict:
    ex = load_extraction(cnmfe_path)
    g = open_group(cnmfe_path)
    for name in ("ids", "snr"):
        if name in g:
            ex[name] = np.asarray(g[name][...])
    K, H, W = ex["A"].shape
    if "A_sessions" in g:
        ex["A_sessions"] = lambda j: np.asarray(g["A_sessions"][j], np.float32)
    else:  # an extraction without per-session footprints: the global ones stand in (fp_corr 1, shift 0)
        ex["A_sessions"] = lambda j: ex["A"]
    return ex


def measure_cells(cnmfe_path: str | os.PathLike, aligned_path: str | os.PathLike, config: Mapping) -> pd.DataFrame:
    """The metrics table (:func:`califlow.cell_metrics.cell_table`) of an extraction.

    Parameters
    ----------
    cnmfe_path, aligned_path : paths of ``cnmfe.zarr`` and ``aligned.zarr``.
    config : resolved configuration with a numeric gSig (``neuron_size_step.job_config``).
    """
    from califlow.cnmfe.data import AlignedStore

    ex = _extraction(cnmfe_path)
    store = AlignedStore(aligned_path)
    vessels = store.vessel_mask(float(config["cnmfe"]["bv_threshold"]))
    surround = None
    K, H, W = ex["A"].shape
    if config["curation"].get("max_background_ratio") is not None and K:
        masks = surround_masks(ex["A"], float(config["general"]["gSig"]))
        chunk = max(1, SURROUND_CHUNK_BYTES // (H * W * 4))
        surround = surround_traces(store.read, store.shape[0], masks, chunk)
    return cell_table(ex, event_threshold=float(config["export"]["event_threshold"]), vessels=vessels,
                      surround=surround)


def write_cells_csv(cnmfe_path: str | os.PathLike, aligned_path: str | os.PathLike, out_path: str | os.PathLike,
                    config: Mapping, manual: str | os.PathLike | None = None) -> pd.DataFrame:
    """Measure, curate and write ``cells.csv`` atomically; returns the table.

    ``manual``: a manual curation table (:func:`califlow.curation.read_manual`), applied last.
    """
    table = measure_cells(cnmfe_path, aligned_path, config)
    sessions = [s["name"] for s in open_group(cnmfe_path).attrs["sessions"]]
    table = curate(table, sessions, config["curation"], neuron_diameter(config))
    if manual is not None and Path(manual).exists():
        table = apply_manual(table, read_manual(manual, len(table)))
        log.info("manual curation applied from %s", manual)
    counts = table["status"].value_counts()
    log.info("cells: %d (%s)", len(table), ", ".join(f"{n} {s}" for s, n in counts.items()) or "none")
    with atomic_output(out_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    return table
