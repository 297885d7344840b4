"""Spatial update: HALS on the footprints within a search support, then thresholding.

For fixed traces the footprints minimise ``sum_b ||Y_b - B_b - A C_b||^2`` with ``A >= 0``
and each column restricted to its search support (``with_dendrites``: the current
support dilated by ``bSiz`` = 5 px, so footprints can grow into any shape; otherwise an
ellipse around the footprint).  The problem is separable by pixel, so HALS sweeps run on
row chunks of A with only the neurons present there.  ``hals_thresh`` regresses on traces
whose values below 3 noise levels are zeroed and removes footprint pixels that are not
above twice their noise level; ``hals`` uses the traces as they are; ``nnls`` runs HALS
to convergence.  ``spatial_constraints`` (``connected``, ``circular``) are applied last.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from califlow.cnmfe.background import RingOperator
from califlow.cnmfe.seeds import disk_footprint

__all__ = [
    "search_support",
    "dilate_columns",
    "threshold_traces",
    "batch_target",
    "hals_footprints",
    "clean_footprints",
]

#: Mahalanobis radius of the elliptic search support used when ``with_dendrites`` is false.
ELLIPSE_DIST = 3.0
#: Minimum footprint value relative to its peak (smaller values are noise).
REL_FLOOR = 0.01


def _column_image(A: sp.csc_matrix, k: int, shape: tuple[int, int], pad: int):
    """Bounding-box image of column k padded by ``pad``: (img, y0, x0) or None if empty."""
    lo, hi = A.indptr[k], A.indptr[k + 1]
    if hi == lo:
        return None
    idx = A.indices[lo:hi]
    ys, xs = idx // shape[1], idx % shape[1]
    y0, x0 = max(0, ys.min() - pad), max(0, xs.min() - pad)
    y1, x1 = min(shape[0], ys.max() + pad + 1), min(shape[1], xs.max() + pad + 1)
    img = np.zeros((y1 - y0, x1 - x0), np.float32)
    img[ys - y0, xs - x0] = A.data[lo:hi]
    return img, y0, x0


def _columns_from_images(items: list, shape: tuple[int, int], K: int) -> sp.csc_matrix:
    """Assemble (img, y0, x0) per column (None = empty) into a csc matrix (P, K)."""
    rows, cols, vals = [], [], []
    for k, it in enumerate(items):
        if it is None:
            continue
        img, y0, x0 = it
        yy, xx = np.nonzero(img)
        rows.append((yy + y0) * shape[1] + (xx + x0))
        cols.append(np.full(yy.size, k))
        vals.append(img[yy, xx])
    p = shape[0] * shape[1]
    if not rows:
        return sp.csc_matrix((p, K), dtype=np.float32)
    return sp.csc_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(p, K))


def _map_columns(mask: sp.csc_matrix, shape: tuple[int, int], pad: int, image_fn) -> sp.csc_matrix:
    """Every column's support as a padded image through ``image_fn(img) -> float32 image`` (empty columns stay)."""
    items = []
    for k in range(mask.shape[1]):
        it = _column_image(mask, k, shape, pad)
        if it is None:
            items.append(None)
            continue
        img, y0, x0 = it
        items.append((image_fn(img).astype(np.float32), y0, x0))
    return _columns_from_images(items, shape, mask.shape[1])


def dilate_columns(mask: sp.csc_matrix, shape: tuple[int, int], radius: int, square: bool = False) -> sp.csc_matrix:
    """Binary dilation of every column's support (a disk, or a square of half-size radius)."""
    if square:
        def grow(img):
            return ndimage.maximum_filter(img != 0, size=2 * radius + 1, mode="constant")
    else:
        st = disk_footprint(radius)

        def grow(img):
            return ndimage.binary_dilation(img != 0, structure=st)
    return _map_columns(sp.csc_matrix(mask), shape, radius, grow)


def _ellipse(img: np.ndarray) -> np.ndarray:
    """The footprint's support joined with its moment ellipse (``ELLIPSE_DIST`` standard deviations)."""
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    w = img / img.sum()
    cy, cx = (w * yy).sum(), (w * xx).sum()
    cov = np.array([[(w * (yy - cy) ** 2).sum(), (w * (yy - cy) * (xx - cx)).sum()],
                    [(w * (yy - cy) * (xx - cx)).sum(), (w * (xx - cx) ** 2).sum()]]) + 0.5 * np.eye(2)
    inv = np.linalg.inv(cov)
    dy, dx = yy - cy, xx - cx
    m = inv[0, 0] * dy * dy + 2 * inv[0, 1] * dy * dx + inv[1, 1] * dx * dx
    return (m <= ELLIPSE_DIST ** 2) | (img > 0)


def _ellipse_support(A: sp.csc_matrix, shape: tuple[int, int], pad: int) -> sp.csc_matrix:
    return _map_columns(A, shape, pad, _ellipse)


def search_support(A: sp.csc_matrix, shape: tuple[int, int], with_dendrites: bool, radius: int) -> sp.csc_matrix:
    """Where each footprint may be nonzero after the update (csc, values 1).

    ``with_dendrites``: the support dilated by a disk of ``radius`` px (CNMF-E 'dilate',
    bSiz = 5); otherwise an ellipse of Mahalanobis radius 3 from the footprint's moments.
    """
    if with_dendrites:
        return dilate_columns(A, shape, radius)
    return _ellipse_support(A, shape, pad=4 * radius)


def threshold_traces(C: np.ndarray, sn: np.ndarray, factor: float = 3.0) -> np.ndarray:
    """Traces with values below ``factor`` x their noise zeroed (``hals_thresh``)."""
    return np.where(factor * sn[:, None] <= C, C, 0).astype(np.float32)


def _masked_product(X: sp.spmatrix, V: np.ndarray, mask: sp.csr_matrix, chunk: int = 4096) -> sp.csr_matrix:
    """``(X @ V)`` evaluated on the nonzeros of ``mask`` only (X sparse P x K, V dense K x K)."""
    X = sp.csr_matrix(X)
    mask = sp.csr_matrix(mask)
    rows, cols = mask.nonzero()
    vals = np.zeros(rows.size, np.float32)
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    bounds = np.searchsorted(rows, np.arange(0, X.shape[0] + chunk, chunk))
    for i, r0 in enumerate(range(0, X.shape[0], chunk)):
        lo, hi = bounds[i], bounds[i + 1]
        if hi == lo:
            continue
        sub = X[r0:r0 + chunk]
        J = np.unique(sub.indices)
        if J.size == 0:
            continue
        kc, kpos = np.unique(cols[lo:hi], return_inverse=True)
        prod = sub[:, J].toarray() @ V[np.ix_(J, kc)]
        vals[lo:hi] = prod[rows[lo:hi] - r0, kpos]
    return sp.csr_matrix((vals, (rows, cols)), shape=mask.shape)


def batch_target(M_b: sp.spmatrix, b0: np.ndarray, s_b: np.ndarray, A: sp.csc_matrix, V_b: np.ndarray,
                 op: RingOperator | None, support: sp.csr_matrix) -> sp.csr_matrix:
    """``(Y_b - B_b) C_b^T`` on the support, from ``M_b = Y_b C_b^T`` (on a ring-wide pattern).

    With ``B_b = b0 + Bop(Y_b - A C_b - b0)``:
    ``(Y_b - B_b) C_b^T = (I - Bop)(M_b - b0 s_b^T) + Bop(A) V_b`` where ``s_b = C_b 1`` and
    ``V_b = C_b C_b^T``.
    """
    support = sp.csr_matrix(support)
    M_b = sp.csr_matrix(M_b)
    r = b0.astype(np.float32)
    if op is not None:
        M_b = M_b - sp.csr_matrix(op.apply(sp.csc_matrix(M_b)))
        r = r - np.asarray(op.apply(r)).ravel()
    T = sp.csr_matrix(M_b.multiply(support))
    rows, cols = support.nonzero()
    T = T - sp.csr_matrix((r[rows] * s_b[cols], (rows, cols)), shape=support.shape)
    if op is not None:
        T = T + _masked_product(op.apply(A), V_b, support)
    return sp.csr_matrix(T, dtype=np.float32)


def hals_footprints(A: sp.csc_matrix, Q: sp.spmatrix, V: np.ndarray, support: sp.spmatrix,
                    n_sweeps: int, chunk: int = 4096) -> sp.csc_matrix:
    """HALS sweeps of the footprints on row chunks (pixels are independent given C).

    Parameters
    ----------
    A : csc (P, K) current footprints (inside the support).
    Q : sparse (P, K) ``sum_b (Y_b - B_b) C_b^T`` on the support.
    V : ndarray (K, K) ``sum_b C_b C_b^T``.
    support : sparse (P, K) where each column may be nonzero.
    n_sweeps : int
    """
    A = sp.csr_matrix(A)
    Q = sp.csr_matrix(Q)
    support = sp.csr_matrix(support)
    P, K = A.shape
    out_rows, out_cols, out_vals = [], [], []
    diag = np.diag(V).astype(np.float64)
    for r0 in range(0, P, chunk):
        r1 = min(P, r0 + chunk)
        sup = support[r0:r1]
        kc = np.unique(sup.indices)
        if kc.size == 0:
            continue
        m = sup[:, kc].toarray() > 0
        a = np.asarray(A[r0:r1][:, kc].toarray(), np.float64) * m
        q = np.asarray(Q[r0:r1][:, kc].toarray(), np.float64)
        v = V[np.ix_(kc, kc)].astype(np.float64)
        for _ in range(n_sweeps):
            for j in range(kc.size):
                d = diag[kc[j]]
                if d <= 0:
                    a[:, j] = 0
                    continue
                col = a[:, j] + (q[:, j] - (a @ v[:, j:j + 1]).ravel()) / d  # GEMM, not GEMV (threading)
                a[:, j] = np.where(m[:, j], np.maximum(col, 0.0), 0.0)
        yy, jj = np.nonzero(a)
        out_rows.append(yy + r0)
        out_cols.append(kc[jj])
        out_vals.append(a[yy, jj].astype(np.float32))
    if not out_rows:
        return sp.csc_matrix((P, K), dtype=np.float32)
    return sp.csc_matrix((np.concatenate(out_vals), (np.concatenate(out_rows), np.concatenate(out_cols))),
                         shape=(P, K))


def _circular(img: np.ndarray) -> np.ndarray:
    """Keep pixels reachable from the peak by non-increasing steps, plus bright ones (> max/3)."""
    peak = np.unravel_index(np.argmax(img), img.shape)
    keep = np.zeros(img.shape, bool)
    keep[peak] = True
    # grow outward: a pixel joins if a kept 8-neighbour is at least as bright
    for _ in range(max(img.shape)):
        grown = ndimage.grey_dilation(np.where(keep, img, -np.inf), size=3)
        new = (~keep) & (img > 0) & (img <= grown + 1e-12)
        if not new.any():
            break
        keep |= new
    return keep | (img > img.max() / 3.0) & _component_of_peak(img > img.max() / 3.0, peak)


def _component_of_peak(mask: np.ndarray, peak) -> np.ndarray:
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    lab = labels[peak]
    return labels == lab if lab > 0 else np.zeros_like(mask)


def clean_footprints(A: sp.csc_matrix, shape: tuple[int, int], noise: tuple[np.ndarray, np.ndarray] | None, *,
                     connected: bool, circular: bool, noise_factor: float = 2.0) -> sp.csc_matrix:
    """Threshold footprints and apply the spatial constraints.

    Parameters
    ----------
    A : csc (P, K)
    shape : (h, w)
    noise : (sn (P,), inv_norm (K,)) or None
        The noise of entry (p, k) of a HALS update is ``sn[p] * inv_norm[k]`` (pixel noise
        over the trace norm); entries below ``noise_factor`` times it are zeroed.
    connected : keep only the 8-connected component holding the peak.
    circular : keep pixels reachable from the peak without going uphill (CNMF-E 'circular').

    Values below 1 % of a footprint's peak are zeroed in every case.
    """
    A = sp.csc_matrix(A, dtype=np.float32, copy=True)
    K = A.shape[1]
    if noise is not None:
        sn, inv_norm = noise
        rows = A.indices
        cols = np.repeat(np.arange(K), np.diff(A.indptr))
        A.data[A.data < noise_factor * sn[rows] * inv_norm[cols]] = 0
        A.eliminate_zeros()
    items = []
    for k in range(K):
        it = _column_image(A, k, shape, 0)
        if it is None:
            items.append(None)
            continue
        img, y0, x0 = it
        img[img < REL_FLOOR * img.max()] = 0
        peak = np.unravel_index(np.argmax(img), img.shape)
        if connected:
            img = img * _component_of_peak(img > 0, peak)
        if circular:
            img = img * _circular(img)
        items.append((img, y0, x0))
    return _columns_from_images(items, shape, K)
