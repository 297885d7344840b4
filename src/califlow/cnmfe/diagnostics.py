"""Loud failure: warnings when an extraction collapsed, naming the parameter most likely at fault.

An extraction *collapses* when the seeding finds many candidates above ``min_corr`` and
``min_pnr`` but few neurons survive initialisation and refinement (the candidates were not
neurons of the size gSig describes), or when it ends with no neuron, or when a session
ends with no active neuron.  The warnings go to the job log, to ``cnmfe.zarr`` attrs
(``warnings``), to the console at the end of the workflow and to the report's front page.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["extraction_warnings", "size_hint", "COLLAPSE_RATIO", "MIN_SEEDS_FOR_COLLAPSE"]

#: Fewer surviving neurons than this fraction of the seeds is a collapse.
COLLAPSE_RATIO = 0.2
#: The collapse test needs at least this many seeds.
MIN_SEEDS_FOR_COLLAPSE = 10


def size_hint(gsig: float, diameter: float | None) -> str | None:
    """'gSig X looks small for these data: ...' (:func:`califlow.sizes.gsig_mismatch`)."""
    from califlow.sizes import gsig_mismatch

    return gsig_mismatch(gsig, diameter)


def extraction_warnings(n_seeds: int, n_neurons: int, active: np.ndarray, session_names: Sequence[str], opts,
                        diameter: float | None = None, animal: str = "") -> list[str]:
    """Warnings about a finished extraction (empty when it looks healthy).

    Parameters
    ----------
    n_seeds : int
        Seeds that passed ``min_corr`` / ``min_pnr`` (and the contrast and vessel tests).
    n_neurons : int
        Neurons written.
    active : ndarray (K, S) bool
        Presence of each neuron in each session.
    session_names : sequence of str
    opts : CnmfeOptions
    diameter : float, optional
        Measured half-maximum neuron diameter (px).
    animal : str
        Prefix of the messages.
    """
    head = f"{animal}: " if animal else ""
    hint = size_hint(opts.gSig, diameter)
    thresholds = f"min_corr {opts.min_corr:g} / min_pnr {opts.min_pnr:g}"
    out = []
    if n_seeds == 0:
        found = (f"only the residual search found {n_neurons} neuron(s)" if n_neurons
                 else "no neuron was extracted")
        out.append(f"{head}CNMF-E found no seed above {thresholds}: {found}"
                   f"{'; ' + hint if hint else '; lower min_corr or min_pnr (califlow seeds shows the candidates)'}")
    elif n_seeds >= MIN_SEEDS_FOR_COLLAPSE and n_neurons < COLLAPSE_RATIO * n_seeds:
        cause = hint or (f"the seeds may not be neurons: check {thresholds} and gSig {opts.gSig:g} "
                         "(califlow seeds shows the candidates)")
        out.append(f"{head}CNMF-E collapsed: {n_seeds} seeds passed {thresholds} but only {n_neurons} neuron(s) "
                   f"survived initialisation and refinement; {cause}")
    if n_neurons == 0:
        out.append(f"{head}the result is empty: no neuron was extracted ({n_seeds} seed(s) passed {thresholds}); "
                   "the NWB, .isxd and CSV exports are valid files with no cell")
    else:
        silent = [n for n, k in zip(session_names, np.asarray(active, bool).sum(axis=0)) if k == 0]
        if silent:
            out.append(f"{head}no neuron is active in session(s) {', '.join(silent)} "
                       f"(of {n_neurons} neurons){'; ' + hint if hint else ''}")
    return out
