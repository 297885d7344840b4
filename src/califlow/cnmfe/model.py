"""The CNMF-E model state shared by every step: footprints, traces, background.

``Y_b ~ A C_b + B_b`` for each batch b, with ``A`` (P x K, sparse, each column's peak 1),
``C`` (K x T) the denoised traces, ``C_raw`` the traces before denoising, ``S`` the
deconvolved activity and ``B_b = b0_b + U W_b D (Y_b - A C_b - b0_b)`` the ring
background of batch b (see :mod:`califlow.cnmfe.background`).  Pixels are indexed in
C order of the (h, w) grid the model lives on (one patch block, or the whole field).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["Model", "footprint_peaks", "footprint_areas", "normalize_footprints", "column_stack"]


@dataclass
class Model:
    """Components of one CNMF-E fit.

    Attributes
    ----------
    shape : (h, w)
    batches : list of (start, stop)
        Absolute frame ranges; ``C[:, j]`` is frame ``batches[0][0] + j``.
    A : csc_matrix (P, K) float32
    C, C_raw, S : ndarray (K, T) float32
    ids : ndarray (K,) int64
        Stable identities (the seed index for seeded neurons).
    sn : ndarray (K, n_batches) float32
        Noise of each trace in each batch (units of C_raw).
    g : ndarray (K, n_batches, p) float64
        AR coefficients of the in-loop deconvolution per trace and batch (NaN = unknown).
    b0 : ndarray (n_batches, P) float32
    W : list of csr_matrix (P_ds, P_ds)
        Ring weights per batch (empty list before the first background fit).
    """

    shape: tuple[int, int]
    batches: list[tuple[int, int]]
    A: sp.csc_matrix
    C: np.ndarray
    C_raw: np.ndarray
    S: np.ndarray
    ids: np.ndarray
    sn: np.ndarray
    g: np.ndarray | None = None
    b0: np.ndarray | None = None
    W: list = field(default_factory=list)

    @property
    def K(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_pixels(self) -> int:
        return int(self.shape[0] * self.shape[1])

    def frames(self, b: int) -> slice:
        """Columns of C belonging to batch ``b``."""
        t0 = self.batches[0][0]
        s, e = self.batches[b]
        return slice(s - t0, e - t0)

    def keep(self, idx) -> None:
        """Keep only the components ``idx`` (indices or boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        self.A = sp.csc_matrix(self.A[:, idx])
        self.C, self.C_raw, self.S = self.C[idx], self.C_raw[idx], self.S[idx]
        self.ids, self.sn = self.ids[idx], self.sn[idx]
        if self.g is not None:
            self.g = self.g[idx]

    def copy(self) -> Model:
        return Model(self.shape, list(self.batches), self.A.copy(), self.C.copy(), self.C_raw.copy(),
                     self.S.copy(), self.ids.copy(), self.sn.copy(), None if self.g is None else self.g.copy(),
                     None if self.b0 is None else self.b0.copy(), list(self.W))


def empty_model(shape: tuple[int, int], batches: list[tuple[int, int]]) -> Model:
    """A model with no component."""
    t = batches[-1][1] - batches[0][0]
    p = shape[0] * shape[1]
    z = np.zeros((0, t), np.float32)
    return Model(tuple(shape), list(batches), sp.csc_matrix((p, 0), dtype=np.float32), z, z.copy(), z.copy(),
                 np.zeros(0, np.int64), np.zeros((0, len(batches)), np.float32))


def column_stack(columns: list[sp.spmatrix], n_rows: int) -> sp.csc_matrix:
    """Stack sparse column vectors (or an empty list) into a csc matrix."""
    if not columns:
        return sp.csc_matrix((n_rows, 0), dtype=np.float32)
    return sp.csc_matrix(sp.hstack(columns, format="csc"), dtype=np.float32)


def footprint_peaks(A: sp.csc_matrix, shape: tuple[int, int]) -> np.ndarray:
    """(K, 2) float (y, x) position of each footprint's maximum (CNMF-E's 'max' location)."""
    A = sp.csc_matrix(A)
    out = np.zeros((A.shape[1], 2))
    for k in range(A.shape[1]):
        lo, hi = A.indptr[k], A.indptr[k + 1]
        if hi > lo:
            p = A.indices[lo + int(np.argmax(A.data[lo:hi]))]
            out[k] = divmod(int(p), shape[1])
        else:
            out[k] = np.nan
    return out


def footprint_centroids(A: sp.csc_matrix, shape: tuple[int, int]) -> np.ndarray:
    """(K, 2) intensity-weighted centroid (y, x) of each footprint."""
    A = sp.csc_matrix(A)
    p = np.arange(A.shape[0])
    yy, xx = p // shape[1], p % shape[1]
    tot = np.asarray(A.sum(axis=0)).ravel()
    cy = np.asarray(A.T @ yy.astype(np.float64)).ravel()
    cx = np.asarray(A.T @ xx.astype(np.float64)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([cy / tot, cx / tot], axis=1)


def footprint_areas(A: sp.csc_matrix) -> np.ndarray:
    """Number of nonzero pixels of each footprint."""
    A = sp.csc_matrix(A)
    A.eliminate_zeros()
    return np.diff(A.indptr)


def footprint_shapes(A: sp.csc_matrix, shape: tuple[int, int], rel: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Area (px) and elongation of the part of each footprint above ``rel`` of its peak.

    Elongation is the ratio of the major to the minor axis of the region (the square root of
    the eigenvalue ratio of its pixel-coordinate covariance, with the 1/12 px^2 of a pixel's
    own extent added); 1 for a disk, about 6 for a vessel segment 36 px long and 6 px wide.

    Returns
    -------
    area : ndarray (K,) int
    elongation : ndarray (K,) float (1 for empty footprints)
    """
    A = sp.csc_matrix(A, dtype=np.float32)
    K = A.shape[1]
    if K == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    peak = np.asarray(A.max(axis=0).toarray()).ravel()
    cols = np.repeat(np.arange(K), np.diff(A.indptr))
    on = A.data >= rel * peak[cols]
    M = sp.csc_matrix((np.ones(int(on.sum())), (A.indices[on], cols[on])), shape=A.shape)
    y, x = np.divmod(np.arange(A.shape[0], dtype=np.float64), shape[1])
    mom = np.asarray(M.T @ np.stack([np.ones_like(y), y, x, y * y, x * x, x * y], axis=1))  # (K, 6)
    n = np.maximum(mom[:, 0], 1)
    my, mx = mom[:, 1] / n, mom[:, 2] / n
    vyy = mom[:, 3] / n - my * my + 1 / 12
    vxx = mom[:, 4] / n - mx * mx + 1 / 12
    vxy = mom[:, 5] / n - my * mx
    half = np.sqrt(np.maximum(((vyy - vxx) / 2) ** 2 + vxy ** 2, 0))
    big, small = (vyy + vxx) / 2 + half, np.maximum((vyy + vxx) / 2 - half, 1e-9)
    return mom[:, 0].astype(np.int64), np.where(mom[:, 0] > 0, np.sqrt(big / small), 1.0)


def normalize_footprints(A: sp.csc_matrix) -> tuple[sp.csc_matrix, np.ndarray]:
    """Scale each column to peak 1; returns (A, peak) so that traces can be multiplied by peak."""
    A = sp.csc_matrix(A, dtype=np.float32, copy=True)
    A.eliminate_zeros()
    peak = np.zeros(A.shape[1], np.float32)
    nz = np.diff(A.indptr) > 0
    if nz.any():
        peak[nz] = np.maximum.reduceat(A.data, A.indptr[:-1][nz])
    scale = np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1), 0.0).astype(np.float32)
    A = sp.csc_matrix(A @ sp.diags(scale))
    return A, peak
