"""Ring background model of CNMF-E, fitted per batch on a decimated grid.

Model (Zhou et al. 2018): ``B = b0 1^T + U W D (Y - A C - b0 1^T)``, where ``D`` averages
``bg_ssub`` x ``bg_ssub`` blocks, ``U`` copies a block back to its pixels and each row of
``W`` (P_ds x P_ds) is nonzero only on a ring of radius ``round(bg_neuron_factor * gSiz /
bg_ssub)`` (+1) around its block: the background of a pixel is predicted from the
fluctuations of pixels one ring radius away, which lie outside the neuron itself.

Each row is a ridge regression fitted on the decimated residual averaged in at most
``bg_fit_frames`` time bins of the batch (the background is slow; binning keeps the fit
cost independent of the batch length).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from califlow.cnmfe.data import Decimation, Summary
from califlow.params import round_half_up

__all__ = ["ring_offsets", "ring_radius_ds", "fit_ring", "RingOperator", "residual_frames"]


def ring_radius_ds(ring_radius_px: float, ssub: int) -> int:
    """Ring radius on the decimated grid: round(ring radius / ssub), at least 1."""
    return max(1, round_half_up(float(ring_radius_px) / int(ssub)))


def ring_offsets(radius: int) -> np.ndarray:
    """(R, 2) integer offsets (dy, dx) with radius < |offset| <= radius + 1."""
    r = int(radius)
    yy, xx = np.mgrid[-r - 1:r + 2, -r - 1:r + 2]
    d2 = yy ** 2 + xx ** 2
    sel = (d2 > r * r) & (d2 <= (r + 1) ** 2)
    return np.stack([yy[sel], xx[sel]], axis=1).astype(np.int64)


def _ring_index(shape_ds: tuple[int, int], offsets: np.ndarray) -> np.ndarray:
    """(P_ds, R) flat index of each ring pixel, or P_ds (a padding row) outside the grid."""
    h, w = shape_ds
    yy, xx = np.mgrid[0:h, 0:w]
    ny = yy.ravel()[:, None] + offsets[None, :, 0]
    nx = xx.ravel()[:, None] + offsets[None, :, 1]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    return np.where(inside, ny * w + nx, h * w)


@numba.njit(cache=True, parallel=True, fastmath=True)
def _ridge_rows(Xp: np.ndarray, idx: np.ndarray, ridge: float, noise: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Ridge weights of every row: Cholesky solve of (X_N X_N^T + lam I) w = X_N x_p.

    Xp is (P + 1, n) with a final zero row used as padding; idx (P, R) indexes Xp.
    lam = ridge * mean energy of the ring pixels + their mean noise energy ``noise``
    (P + 1,) (+ a tiny floor).
    """
    p, R = idx.shape
    n = Xp.shape[1]
    out = np.zeros((p, R), np.float32)
    for i in numba.prange(p):
        g = np.zeros((R, R), np.float64)
        rhs = np.zeros(R, np.float64)
        xi = Xp[i]
        for a in range(R):
            xa = Xp[idx[i, a]]
            s = np.float32(0.0)
            for t in range(n):
                s += xa[t] * xi[t]
            rhs[a] = s
            for b in range(a, R):
                xb = Xp[idx[i, b]]
                s = np.float32(0.0)
                for t in range(n):
                    s += xa[t] * xb[t]
                g[a, b] = s
                g[b, a] = s
        energy = 0.0
        nz = 0.0
        for a in range(R):
            energy += g[a, a]
            nz += noise[idx[i, a]]
        lam = ridge * energy / R + nz / R + 1e-9
        for a in range(R):
            g[a, a] += lam
        # Cholesky factorisation g = L L^T (in place, lower triangle)
        for j in range(R):
            d = g[j, j]
            for k in range(j):
                d -= g[j, k] * g[j, k]
            d = np.sqrt(d) if d > 0 else 1e-12
            g[j, j] = d
            for r in range(j + 1, R):
                v = g[r, j]
                for k in range(j):
                    v -= g[r, k] * g[j, k]
                g[r, j] = v / d
        # forward then backward substitution
        z = np.zeros(R, np.float64)
        for r in range(R):
            v = rhs[r]
            for k in range(r):
                v -= g[r, k] * z[k]
            z[r] = v / g[r, r]
        for r in range(R - 1, -1, -1):
            v = z[r]
            for k in range(r + 1, R):
                v -= g[k, r] * out[i, k]
            out[i, r] = v / g[r, r]
    return out


def fit_ring(X: np.ndarray, shape_ds: tuple[int, int], radius: int, ridge: float = 1e-2,
             noise: np.ndarray | None = None) -> sp.csr_matrix:
    """Ridge-fit the ring weights ``W`` to a decimated residual movie.

    The ridge penalty of a row is ``ridge`` times the mean energy of its ring pixels plus
    their mean noise energy: regressors that are mostly noise get small weights, so the
    predicted background does not amplify the noise of the ring (with few time bins and
    ~50 ring pixels an unpenalised fit would).

    Parameters
    ----------
    X : ndarray (P_ds, n)
        Decimated, time-binned, temporally centred residual ``Y - A C - b0``.
    shape_ds : (h_ds, w_ds)
    radius : int
        Ring radius on the decimated grid.
    ridge : float
        Ridge penalty relative to the mean energy of a ring pixel.
    noise : ndarray (P_ds,), optional
        Expected noise energy of each row of X (sum over its time bins of the noise
        variance); default 0.

    Returns
    -------
    csr_matrix (P_ds, P_ds) float32
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    p, n = X.shape
    offsets = ring_offsets(radius)
    idx = _ring_index(shape_ds, offsets)
    Xp = np.vstack([X, np.zeros((1, n), np.float32)])
    R = offsets.shape[0]
    nz = np.zeros(p + 1, np.float64)
    if noise is not None:
        nz[:p] = np.asarray(noise, np.float64)
    weights = _ridge_rows(Xp, idx, float(ridge), nz)
    valid = idx < p
    rows = np.repeat(np.arange(p), R).reshape(p, R)[valid]
    return sp.csr_matrix((weights[valid], (rows, idx[valid])), shape=(p, p), dtype=np.float32)


class RingOperator:
    """``Bop(M) = U W D M`` and its transpose for one batch's ring weights."""

    def __init__(self, W: sp.csr_matrix, dec: Decimation):
        self.W = sp.csr_matrix(W, dtype=np.float32)
        self.dec = dec
        self._by_offset = None

    def apply(self, M):
        """``U W D M`` for M (P x K) sparse or dense, or a vector (P,)."""
        out = self.dec.U @ (self.W @ (self.dec.D @ M))
        return out

    def apply_t(self, M):
        """``D^T W^T U^T M``."""
        return self.dec.D.T @ (self.W.T @ (self.dec.U.T @ M))

    def offset_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """W by ring offset: ``offsets`` (R, 2) (dy, dx) and ``weights`` (R, h_ds, w_ds) float32.

        ``weights[o, y, x]`` is the weight of block ``(y + dy, x + dx)`` in the row of block
        ``(y, x)`` (0 where there is none), so ``W`` acts on a frame as R shifted products.
        """
        if self._by_offset is None:
            hd, wd = self.dec.shape_ds
            rows = np.repeat(np.arange(hd * wd), np.diff(self.W.indptr))
            dy = self.W.indices // wd - rows // wd
            dx = self.W.indices % wd - rows % wd
            m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
            key = (dy + m) * (2 * m + 1) + (dx + m)
            present = np.zeros((2 * m + 1) ** 2, bool)
            present[key] = True
            which = np.cumsum(present) - 1  # offset index of each present key
            codes = np.flatnonzero(present)
            offsets = np.stack([codes // (2 * m + 1) - m, codes % (2 * m + 1) - m], axis=1).astype(np.int64)
            weights = np.zeros((len(codes), hd * wd), np.float32)
            weights[which[key], rows] = self.W.data
            self._by_offset = (offsets, weights.reshape(len(codes), hd, wd))
        return self._by_offset

    def subtract_from_frames(self, E: np.ndarray) -> None:
        """``E -= (U W D E^T)^T`` in place for frames E (T, P) float32 (no transposed copies)."""
        offsets, weights = self.offset_weights()
        Z = self.dec.mean_frames(E).reshape(E.shape[0], *self.dec.shape_ds)
        V = _ring_frames(offsets, weights, Z)
        _subtract_blocks(E, V.reshape(E.shape[0], -1), self.dec.block_of)


def fit_batch_background(summary: Summary, A: sp.csc_matrix, C_b: np.ndarray, dec: Decimation, radius: int,
                         ridge: float = 1e-2) -> tuple[np.ndarray, sp.csr_matrix]:
    """Fit ``b0`` and ``W`` of one batch from its summary and the current neurons.

    Parameters
    ----------
    summary : Summary
        Mean and binned decimated movie of the batch.
    A : csc_matrix (P, K)
    C_b : ndarray (K, T_b)
        Denoised traces of the batch.

    Returns
    -------
    b0 : ndarray (P,)  ``mean_t(Y - A C)``
    W : csr_matrix (P_ds, P_ds)
    """
    K = A.shape[1]
    mean_c = C_b.mean(axis=1) if K else np.zeros(0, np.float32)
    b0 = summary.mean - (A @ mean_c if K else 0.0)
    if K:
        starts = np.r_[0, np.flatnonzero(np.diff(summary.bin_of)) + 1]
        lens = np.diff(np.r_[starts, C_b.shape[1]]).astype(np.float32)
        cbin = np.add.reduceat(C_b, starts, axis=1) / lens[None, :]  # (K, nb)
        Ads = dec.D @ A
        X = summary.Yds - np.asarray(Ads @ cbin)
    else:
        X = summary.Yds.copy()
    X = X - X.mean(axis=1, keepdims=True)
    # noise energy of each decimated, binned pixel: block-mean variance / bin length, over the bins
    var_ds = np.bincount(dec.block_of, weights=summary.sn.astype(np.float64) ** 2, minlength=dec.n_ds) / dec.counts ** 2
    bin_len = np.bincount(summary.bin_of).astype(np.float64)
    W = fit_ring(X, dec.shape_ds, radius, ridge=ridge, noise=var_ds * np.sum(1.0 / bin_len))
    return np.asarray(b0, np.float32).ravel(), W


#: Frames per task of :func:`_ring_frames` (their rows stay in the L2 cache across offsets).
RING_FRAME_BLOCK = 8


@numba.njit(cache=True, parallel=True, fastmath=True)
def _ring_frames(offsets, weights, Z):  # pragma: no cover
    """``(W Z_t)`` of every decimated frame Z (T, h_ds, w_ds), W given by ring offset.

    ``out[t, y, x] = sum_o weights[o, y, x] Z[t, y + dy_o, x + dx_o]`` (terms outside the
    grid are absent); contiguous inner loops over x, blocks of frames per thread.
    """
    T, hd, wd = Z.shape
    R = offsets.shape[0]
    out = np.zeros((T, hd, wd), np.float32)
    nb = (T + RING_FRAME_BLOCK - 1) // RING_FRAME_BLOCK
    for tb in numba.prange(nb):
        t0 = tb * RING_FRAME_BLOCK
        t1 = min(T, t0 + RING_FRAME_BLOCK)
        for o in range(R):
            dy = offsets[o, 0]
            dx = offsets[o, 1]
            y0, y1 = max(0, -dy), min(hd, hd - dy)
            x0, x1 = max(0, -dx), min(wd, wd - dx)
            for t in range(t0, t1):
                for y in range(y0, y1):
                    # 1-d row views: the inner loop vectorises
                    orow = out[t, y, x0:x1]
                    wrow = weights[o, y, x0:x1]
                    zrow = Z[t, y + dy, x0 + dx:x1 + dx]
                    for k in range(x1 - x0):
                        orow[k] += wrow[k] * zrow[k]
    return out


@numba.njit(cache=True, parallel=True)
def _subtract_blocks(E, V, block_of):  # pragma: no cover
    """``E[t, p] -= V[t, block_of[p]]`` in place."""
    T, P = E.shape
    for t in numba.prange(T):
        for p in range(P):
            E[t, p] -= V[t, block_of[p]]


@numba.njit(cache=True, parallel=True)
def _subtract_sparse_product(E, indptr, indices, data, C):  # pragma: no cover
    """``E -= (A C)^T`` in place for E (T, P), A (P, K) in CSC form and C (K, T)."""
    T = E.shape[0]
    K = C.shape[0]
    for t in numba.prange(T):
        for k in range(K):
            c = C[k, t]
            if c != 0:
                for j in range(indptr[k], indptr[k + 1]):
                    E[t, indices[j]] -= data[j] * c


def residual_frames(Y_b: np.ndarray, A: sp.csc_matrix, C_b: np.ndarray, b0: np.ndarray,
                    op: RingOperator | None) -> np.ndarray:
    """Residual ``Y - A C - B`` (T_b, P) of frames held in memory, ``B = b0 + U W D (Y - A C - b0)``."""
    E = np.asarray(Y_b, np.float32) - b0[None, :]
    if A.shape[1]:
        A = sp.csc_matrix(A, dtype=np.float32)
        _subtract_sparse_product(E, A.indptr, A.indices, A.data, np.ascontiguousarray(C_b, dtype=np.float32))
    if op is not None:
        op.subtract_from_frames(E)
    return E
