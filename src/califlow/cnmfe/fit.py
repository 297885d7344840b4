"""The CNMF-E refinement loop on one source (a patch block in RAM or the streamed movie).

One iteration, as CaliAli's ``CNMF_CaliAli_update``: ring background per batch, pooled
spatial update (HALS within the search support), per-batch temporal update (HALS with
deconvolution), false-positive removal and merging.  Every product of the movie comes
from the source (:mod:`califlow.cnmfe.data`), so the same code refines one patch held in
memory and the whole field of view streamed in tiles.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from califlow.cnmfe.background import RingOperator, fit_batch_background, ring_radius_ds
from califlow.cnmfe.data import Decimation, Source
from califlow.cnmfe.merge import merge_components, remove_false_positives
from califlow.cnmfe.model import Model, normalize_footprints
from califlow.cnmfe.spatial import (
    batch_target,
    clean_footprints,
    dilate_columns,
    hals_footprints,
    search_support,
    threshold_traces,
)
from califlow.cnmfe.temporal import denoise_traces, hals_traces

__all__ = ["Fitter"]

log = logging.getLogger("califlow.cnmfe")

#: HALS sweeps per spatial update (``nnls`` runs to convergence instead).
SPATIAL_SWEEPS = {"hals_thresh": 5, "hals": 5, "nnls": 50}
#: HALS sweeps per temporal update.
TEMPORAL_SWEEPS = 2
#: The loop stops when 1 - mean trace correlation between iterations falls below this (CaliAli).
CONVERGENCE = 0.05


class Fitter:
    """Runs CNMF-E updates of a :class:`Model` against a source.

    Parameters
    ----------
    source : InMemorySource or AlignedMovieSource
    opts : CnmfeOptions
    vessels : ndarray (h, w) bool, optional
        Blood-vessel mask of the source's pixels: vessel-shaped components on it are false
        positives (``remove_BV``).
    """

    def __init__(self, source: Source, opts, vessels: np.ndarray | None = None):
        self.source = source
        self.opts = opts
        self.vessels = None if vessels is None else np.asarray(vessels, bool).ravel()
        self.dec = Decimation(source.shape, opts.bg_ssub)
        self.radius_ds = ring_radius_ds(opts.ring_radius, opts.bg_ssub)
        self.reach = (self.radius_ds + 2) * opts.bg_ssub
        nb = len(source.batches)
        self.summaries = [source.summary(b, self.dec, opts.bg_fit_frames) for b in range(nb)]
        self.sn_pixel = np.mean([s.sn for s in self.summaries], axis=0).astype(np.float32)

    # -- background ---------------------------------------------------------------------
    def update_background(self, model: Model) -> None:
        """Fit b0 and the ring weights W of every batch."""
        nb = len(model.batches)
        b0 = np.zeros((nb, model.n_pixels), np.float32)
        W = []
        for b in range(nb):
            b0[b], Wb = fit_batch_background(self.summaries[b], model.A, model.C[:, model.frames(b)], self.dec,
                                             self.radius_ds)
            W.append(Wb)
        model.b0, model.W = b0, W

    def ring_operator(self, model: Model, b: int) -> RingOperator | None:
        """The ring operator of batch ``b`` (None before the first background fit)."""
        return RingOperator(model.W[b], self.dec) if model.W else None

    def baseline(self, model: Model, b: int) -> np.ndarray:
        """Constant background ``b0`` of batch ``b`` (the pixel means before the first fit)."""
        if model.b0 is None:
            return self.summaries[b].mean
        return model.b0[b]

    # -- spatial ------------------------------------------------------------------------
    def spatial_statistics(self, model: Model, support: sp.csc_matrix):
        """Per batch: target ``(Y_b - B_b) C_b^T`` on the support and ``V_b = C_b C_b^T``."""
        pattern = dilate_columns(support, model.shape, self.reach, square=True)
        thresh = self.opts.spatial_algorithm == "hals_thresh"
        out = []
        for b in range(len(model.batches)):
            C_b = model.C[:, model.frames(b)]
            if thresh:
                C_b = threshold_traces(C_b, model.sn[:, b])
            M_b = self.source.correlate(b, C_b, pattern)
            V_b = (C_b.astype(np.float64) @ C_b.T.astype(np.float64)).astype(np.float32)
            Q_b = batch_target(M_b, self.baseline(model, b), C_b.sum(axis=1), model.A, V_b,
                               self.ring_operator(model, b), sp.csr_matrix(support))
            out.append((Q_b, V_b))
        return out

    def _solve_footprints(self, A0, Q, V, support, shape):
        sweeps = SPATIAL_SWEEPS[self.opts.spatial_algorithm]
        A = hals_footprints(sp.csc_matrix(A0.multiply(support)), Q, V, support, sweeps)
        noise = None
        if self.opts.spatial_algorithm == "hals_thresh":
            inv_norm = 1.0 / np.sqrt(np.maximum(np.diag(V), 1e-12))
            noise = (self.sn_pixel, inv_norm.astype(np.float32))
        return clean_footprints(A, shape, noise, connected=self.opts.connected, circular=self.opts.circular)

    def update_spatial(self, model: Model) -> None:
        """Pooled spatial update of all footprints (traces rescaled to peak-1 footprints)."""
        if model.K == 0:
            return
        support = search_support(model.A, model.shape, self.opts.with_dendrites, self.opts.search_radius)
        stats = self.spatial_statistics(model, support)
        Q = stats[0][0]
        V = stats[0][1].astype(np.float64)
        for Q_b, V_b in stats[1:]:
            Q = Q + Q_b
            V = V + V_b
        A = self._solve_footprints(model.A, Q, V, support, model.shape)
        A, peak = normalize_footprints(A)
        model.A = A
        scale = peak[:, None]
        model.C *= scale
        model.C_raw *= scale
        model.S *= scale
        model.sn *= peak[:, None]

    def batch_footprints(self, model: Model) -> list[sp.csc_matrix]:
        """Footprints fitted to each batch separately (QC of per-session footprints)."""
        if model.K == 0:
            return [sp.csc_matrix(model.A.shape, dtype=np.float32) for _ in model.batches]
        support = search_support(model.A, model.shape, self.opts.with_dendrites, self.opts.search_radius)
        out = []
        for Q_b, V_b in self.spatial_statistics(model, support):
            A_b = self._solve_footprints(model.A, Q_b, V_b.astype(np.float64), support, model.shape)
            out.append(sp.csc_matrix(A_b, dtype=np.float32))
        return out

    # -- temporal -----------------------------------------------------------------------
    def update_temporal(self, model: Model, refit_g: bool = False) -> None:
        """Per-batch HALS on the traces with in-loop deconvolution.

        The AR coefficients found at initialisation are reused unless ``refit_g`` (then
        ``deconv_options`` is applied as given, ``optimize_pars`` included).
        """
        if model.K == 0:
            return
        A = sp.csc_matrix(model.A)
        VA = (A.T @ A).toarray().astype(np.float32)
        for b in range(len(model.batches)):
            cols = model.frames(b)
            op = self.ring_operator(model, b)
            b0 = self.baseline(model, b)
            if op is not None:
                G = sp.csc_matrix(A - op.apply_t(A))
                ABA = (A.T @ op.apply(A))
                ABA = ABA.toarray() if sp.issparse(ABA) else np.asarray(ABA)
            else:
                G, ABA = A, None
            U = self.source.project(b, G)
            U -= np.asarray(G.T @ b0).ravel()[:, None]
            if ABA is not None:
                U += ABA.astype(np.float32) @ model.C[:, cols]
            g_b = model.g[:, b] if (model.g is not None and not refit_g) else None
            C, C_raw, S, sn, g = hals_traces(U, VA, model.C[:, cols], deconv_flag=self.opts.deconv_flag,
                                             options=self.opts.deconv_options, g=g_b, n_sweeps=TEMPORAL_SWEEPS)
            model.C[:, cols], model.C_raw[:, cols], model.S[:, cols] = C, C_raw, S
            model.sn[:, b] = sn
            if model.g is None:
                model.g = np.full((model.K, len(model.batches), g.shape[1]), np.nan)
            model.g[:, b] = g

    def redenoise(self, model: Model, rows: np.ndarray) -> None:
        """Denoise ``model.C_raw[rows]`` again batch by batch (after merging)."""
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            return
        for b in range(len(model.batches)):
            cols = model.frames(b)
            g_b = None if model.g is None else model.g[rows, b]
            C, S, base, sn, g = denoise_traces(model.C_raw[rows, cols], self.opts.deconv_flag,
                                               self.opts.deconv_options, g=g_b)
            model.C[rows, cols], model.S[rows, cols] = C, S
            model.C_raw[rows, cols] -= base[:, None].astype(np.float32)
            model.sn[rows, b] = sn
            if model.g is not None:
                model.g[rows, b] = g

    # -- the loop -----------------------------------------------------------------------
    def clean(self, model: Model) -> None:
        """False-positive removal and merging."""
        removed = remove_false_positives(model, self.opts.min_pixel, self.vessels)
        merged = merge_components(model, self.opts, deconvolve=self.redenoise)
        removed2 = remove_false_positives(model, self.opts.min_pixel, self.vessels)
        log.debug("clean: %d removed, %d merged, %d removed after merging", int(removed.sum()), merged,
                  int(removed2.sum()))

    def iterate(self, model: Model, n_iter: int, tol: float = CONVERGENCE) -> int:
        """Up to ``n_iter`` iterations (background, spatial, temporal, clean); returns the count run.

        Stops early, as CaliAli does, when the traces barely change: 1 - the mean correlation
        between each component's trace before and after an iteration is below ``tol``.
        """
        for it in range(n_iter):
            before = {int(i): c.copy() for i, c in zip(model.ids, model.C)}  # rows are updated in place
            self.update_background(model)
            self.update_spatial(model)
            self.update_temporal(model)
            self.clean(model)
            log.debug("iteration %d: %d components", it + 1, model.K)
            if trace_dissimilarity(before, model) < tol:
                return it + 1
        return n_iter


def trace_dissimilarity(before: dict, model: Model) -> float:
    """1 - mean Pearson correlation of the traces of components present before and after."""
    from califlow.cnmfe.merge import trace_correlation_matrix

    common = [(before[int(i)], c) for i, c in zip(model.ids, model.C) if int(i) in before]
    if not common:
        return 1.0
    X = np.stack([a for a, _ in common] + [b for _, b in common])
    n = len(common)
    r = trace_correlation_matrix(X, np.stack([np.arange(n), np.arange(n) + n], axis=1))
    return float(1.0 - np.mean(r))
