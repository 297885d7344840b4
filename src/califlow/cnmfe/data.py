"""Access to the aligned movie for CNMF-E: validation, batches, and streamed products.

The CNMF-E updates only ever need a few products of the movie ``Y`` (pixels x frames) of
one batch: ``G^T Y`` (projections on footprint-like maps), ``Y C^T`` on a sparsity
pattern, the temporal mean, a noise level per pixel, and a spatially decimated,
temporally binned copy for the ring background.  :class:`AlignedMovieSource` computes them by
streaming spatial tiles over time chunks, so that memory is set by the tile budget and
not by the movie length; :class:`InMemorySource` does the same on a block held in RAM
(one patch).  Both share the products' code (they only differ in how tiles are read).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from califlow.errors import InputError
from califlow.io.encoding import MovieEncoding
from califlow.io.store import open_group

__all__ = [
    "AlignedStore",
    "make_batches",
    "Summary",
    "Decimation",
    "InMemorySource",
    "AlignedMovieSource",
    "load_movie",
    "TILE_BYTES",
]


# ---------------------------------------------------------------------------------------
# the aligned store
# ---------------------------------------------------------------------------------------
class AlignedStore:
    """Read-only view of an ``aligned.zarr`` store (validated on opening).

    Attributes
    ----------
    path : Path
    shape : (T, H, W)
    sessions : list of dict
        ``{name, start, stop, fps, source}`` in movie order (frames, stop exclusive).
    fps : float
        Frame rate (Hz) of the first session.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            group = open_group(self.path, "r")
        except FileNotFoundError as exc:
            raise InputError(f"{self.path}: {exc}") from None
        if "movie" not in group:
            raise InputError(f"{self.path}: no 'movie' array; is this an aligned.zarr store?")
        self.movie = group["movie"]
        self.encoding = MovieEncoding.of(self.movie)
        if self.movie.ndim != 3:
            raise InputError(f"{self.path}/movie: expected (T, H, W), got shape {self.movie.shape}")
        self.shape = tuple(int(s) for s in self.movie.shape)
        t, h, w = self.shape
        if t < 2 or h < 4 or w < 4:
            raise InputError(f"{self.path}/movie: shape {self.shape} is too small for CNMF-E")
        self.sessions = self._read_sessions(group)
        rates = [s.get("fps") for s in self.sessions if s.get("fps")]
        self.fps = float(rates[0]) if rates else None
        self.cn = self._read_projection(group, "cn")
        self.pnr = self._read_projection(group, "pnr")
        self.bv = self._read_projection(group, "bv") if "bv" in group else None
        self.attrs = dict(group.attrs)

    def _read_sessions(self, group) -> list[dict]:
        t = self.shape[0]
        raw = group.attrs.get("sessions")
        if not raw:
            return [{"name": "session0", "start": 0, "stop": t, "fps": None, "source": None}]
        out, expect = [], 0
        for i, s in enumerate(raw):
            try:
                start, stop = int(s["start"]), int(s["stop"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{self.path}: attrs 'sessions' entry {i} lacks integer start/stop: {s!r}") from None
            if start != expect or stop <= start:
                raise InputError(f"{self.path}: attrs 'sessions' entry {i} ({s.get('name')}) spans frames "
                                 f"[{start}, {stop}); expected a non-empty range starting at frame {expect}")
            out.append({"name": str(s.get("name", f"session{i}")), "start": start, "stop": stop,
                        "fps": s.get("fps"), "source": s.get("source")})
            expect = stop
        if expect != t:
            raise InputError(f"{self.path}: attrs 'sessions' cover frames [0, {expect}) but the movie has {t} frames")
        return out

    def _read_projection(self, group, name: str) -> np.ndarray:
        _, h, w = self.shape
        if name not in group:
            raise InputError(f"{self.path}: no '{name}' array (per-session aligned projections (S, H, W))")
        arr = np.asarray(group[name][...], dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape[1:] != (h, w):
            raise InputError(f"{self.path}/{name}: shape {arr.shape} does not match the movie's (H, W) = {(h, w)}")
        if arr.shape[0] != len(self.sessions):
            raise InputError(f"{self.path}/{name}: {arr.shape[0]} images for {len(self.sessions)} sessions")
        return arr

    def read(self, t0: int, t1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Frames [t0, t1) of the movie in a spatial window, float32 (n, h, w).

        Raises
        ------
        InputError
            When the window holds a non-finite value (names the first bad frame).
        """
        data = self.encoding.decode(self.movie[t0:t1, ys, xs])
        bad = _first_nonfinite_frame(data.reshape(data.shape[0], -1))
        if bad >= 0:
            raise InputError(f"{self.path}/movie: frame {t0 + bad} holds NaN or infinite values "
                             f"(rows {ys.start}:{ys.stop}, columns {xs.start}:{xs.stop})")
        return data

    def vessel_mask(self, threshold: float) -> np.ndarray | None:
        """Pixels on blood vessels: max over sessions of the ``bv`` image above ``threshold`` (None without bv)."""
        if self.bv is None:
            return None
        return np.nan_to_num(self.bv, nan=0.0).max(axis=0) > float(threshold)

    def global_projections(self) -> tuple[np.ndarray, np.ndarray]:
        """Global seeding images: Cn = max over sessions (normalised to max 1), PNR = max over sessions."""
        cn = np.nan_to_num(self.cn, nan=0.0).max(axis=0)
        top = float(cn.max())
        cn = cn / top if top > 0 else cn
        pnr = np.nan_to_num(self.pnr, nan=0.0).max(axis=0)
        return cn.astype(np.float32), pnr.astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _first_nonfinite_frame(X: np.ndarray) -> int:  # pragma: no cover - numba
    """Index of the first row of X (n, P) holding a NaN or infinite value, -1 if none (no temporaries)."""
    for t in range(X.shape[0]):
        for p in range(X.shape[1]):
            if not np.isfinite(X[t, p]):
                return t
    return -1


def make_batches(sessions: Sequence[dict], n_frames: int, batch_sz: int) -> list[tuple[int, int]]:
    """Frame ranges of the CNMF-E batches.

    ``batch_sz`` 0 gives one batch per session; N > 0 gives consecutive batches of N
    frames (the last one takes the remainder; a remainder shorter than N/2 joins the
    previous batch), ignoring session boundaries as CaliAli does.
    """
    if batch_sz <= 0:
        return [(int(s["start"]), int(s["stop"])) for s in sessions]
    edges = list(range(0, n_frames, batch_sz)) + [n_frames]
    if len(edges) > 2 and edges[-1] - edges[-2] < batch_sz / 2:
        edges.pop(-2)
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


# ---------------------------------------------------------------------------------------
# spatial decimation used by the ring background
# ---------------------------------------------------------------------------------------
class Decimation:
    """Block-average decimation by ``ssub`` of an (h, w) grid and its nearest upsampling.

    ``D`` (P_ds x P) averages each ssub x ssub block (edge blocks average what they have);
    ``U`` (P x P_ds) copies a block value back to its pixels.
    """

    def __init__(self, shape: tuple[int, int], ssub: int):
        h, w = shape
        self.shape = (int(h), int(w))
        self.ssub = int(ssub)
        self.shape_ds = (-(-h // ssub), -(-w // ssub))
        yy, xx = np.mgrid[0:h, 0:w]
        self.block_of = ((yy // ssub) * self.shape_ds[1] + (xx // ssub)).ravel()
        p, pd = h * w, self.shape_ds[0] * self.shape_ds[1]
        self.U = sp.csr_matrix((np.ones(p, np.float32), (np.arange(p), self.block_of)), shape=(p, pd))
        counts = np.bincount(self.block_of, minlength=pd).astype(np.float32)
        self.counts = counts
        self.D = sp.csr_matrix((1.0 / counts[self.block_of], (self.block_of, np.arange(p))), shape=(pd, p),
                               dtype=np.float32)

    @property
    def n_ds(self) -> int:
        return self.shape_ds[0] * self.shape_ds[1]

    def mean_frames(self, X: np.ndarray) -> np.ndarray:
        """``(D X^T)^T``: block means (T, P_ds) of frames X (T, P), without transposing."""
        return _block_means(np.ascontiguousarray(X, dtype=np.float32), self.block_of, 1.0 / self.counts, self.n_ds)


# ---------------------------------------------------------------------------------------
# sources: streamed products of one batch
# ---------------------------------------------------------------------------------------
@dataclass
class Summary:
    """Products of one batch that do not depend on the model.

    Attributes
    ----------
    n_frames : int
    mean : ndarray (P,)   temporal mean of each pixel
    sn : ndarray (P,)     noise level of each pixel (rms of first differences / sqrt 2)
    Yds : ndarray (P_ds, n_bins)  decimated movie averaged in ``n_bins`` equal time bins
    bin_of : ndarray (T_b,) int    time bin of each frame of the batch
    """

    n_frames: int
    mean: np.ndarray
    sn: np.ndarray
    Yds: np.ndarray
    bin_of: np.ndarray


def time_bins(n_frames: int, n_bins: int) -> np.ndarray:
    """Bin index of each of ``n_frames`` frames for ``n_bins`` nearly equal consecutive bins."""
    n_bins = max(1, min(int(n_bins), int(n_frames)))
    return (np.arange(n_frames, dtype=np.int64) * n_bins // n_frames).astype(np.int64)


class Source(abc.ABC):
    """Products shared by the in-memory and streamed sources (see module docstring).

    Subclasses provide ``shape`` (h, w), ``batches`` (list of absolute (start, stop)) and
    ``_tiles(b)`` yielding ``(tile_id, pixel_index (p,), t_rel0, Y (n, p))`` that cover
    every pixel and every frame of batch ``b`` exactly once; a tile id always names the
    same pixel set.
    """

    shape: tuple[int, int]
    batches: list[tuple[int, int]]

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    def n_frames(self, b: int) -> int:
        s, e = self.batches[b]
        return e - s

    @abc.abstractmethod
    def _tiles(self, b: int) -> Iterator[tuple[int, np.ndarray, int, np.ndarray]]:
        """Yield (tile_id, pixel indices, first frame relative to the batch, data (n, p))."""

    # -- products ---------------------------------------------------------------------
    def summary(self, b: int, dec: Decimation, n_bins: int) -> Summary:
        """Mean, noise and binned decimated movie of batch ``b`` (one streamed pass)."""
        t = self.n_frames(b)
        bin_of = time_bins(t, n_bins)
        nb = int(bin_of[-1]) + 1
        bin_len = np.bincount(bin_of, minlength=nb).astype(np.float32)
        total = np.zeros(self.n_pixels, np.float64)
        dsq = np.zeros(self.n_pixels, np.float64)
        ndiff = np.zeros(self.n_pixels, np.int64)
        yds = np.zeros((dec.n_ds, nb), np.float32)
        pool: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        last: dict[int, np.ndarray] = {}
        for tid, pix, t0, y in self._tiles(b):
            n = y.shape[0]
            total[pix] += y.sum(axis=0, dtype=np.float64)
            d = np.diff(np.concatenate([last[tid][None], y]) if tid in last else y, axis=0)
            dsq[pix] += np.einsum("ij,ij->j", d, d, dtype=np.float64)
            ndiff[pix] += d.shape[0]
            last[tid] = y[-1].copy()
            bins = bin_of[t0:t0 + n]
            if tid not in pool:
                blocks, local = np.unique(dec.block_of[pix], return_inverse=True)
                pool[tid] = (blocks, local.astype(np.int64))
            blocks, local = pool[tid]
            b0 = int(bins[0])
            yds[blocks, b0:int(bins[-1]) + 1] += _binned_block_sums(y, local, bins - b0, blocks.size,
                                                                    int(bins[-1]) - b0 + 1)
        yds /= dec.counts[:, None]
        yds /= bin_len[None, :]
        sn = np.sqrt(dsq / np.maximum(ndiff, 1) / 2.0).astype(np.float32)
        return Summary(t, (total / t).astype(np.float32), sn, yds, bin_of)

    def project(self, b: int, G: sp.spmatrix) -> np.ndarray:
        """``G^T Y_b``: (K, T_b) for G (P x K, sparse)."""
        G = sp.csr_matrix(G, dtype=np.float32)
        out = np.zeros((G.shape[1], self.n_frames(b)), np.float32)
        pool: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for tid, pix, t0, y in self._tiles(b):
            if tid not in pool:
                sub = G[pix]
                cols = np.unique(sub.indices)
                pool[tid] = (cols, sub[:, cols].toarray())
            cols, dense = pool[tid]
            if cols.size:
                out[cols, t0:t0 + y.shape[0]] += (y @ dense).T
        return out

    def correlate(self, b: int, C: np.ndarray, pattern: sp.spmatrix) -> sp.csc_matrix:
        """``Y_b C^T`` evaluated on the nonzeros of ``pattern`` (P x K), as a csc matrix."""
        pattern = sp.coo_matrix(pattern)
        rows, cols = pattern.row.astype(np.int64), pattern.col.astype(np.int64)
        vals = np.zeros(rows.size, np.float64)
        C = np.ascontiguousarray(C, dtype=np.float32)
        local = np.full(self.n_pixels, -1, np.int64)
        pool: dict[int, tuple] = {}
        for tid, pix, t0, y in self._tiles(b):
            if tid not in pool:
                local[pix] = np.arange(pix.size)
                entries = np.flatnonzero(local[rows] >= 0)
                kc, kpos = np.unique(cols[entries], return_inverse=True)
                pool[tid] = (entries, local[rows[entries]], kc, kpos)
                local[pix] = -1
            entries, prow, kc, kpos = pool[tid]
            if entries.size == 0:
                continue
            prod = y.T @ C[kc, t0:t0 + y.shape[0]].T  # (p, k_tile)
            vals[entries] += prod[prow, kpos]
        return sp.csc_matrix((vals.astype(np.float32), (rows, cols)), shape=pattern.shape)


@numba.njit(cache=True, parallel=True)
def _block_means(X, block_of, inv_counts, n_ds):  # pragma: no cover - numba
    """Block means (T, n_ds) of frames X (T, P); ``block_of`` (P,) the block of each pixel."""
    T, P = X.shape
    out = np.zeros((T, n_ds), np.float32)
    for t in numba.prange(T):
        for p in range(P):
            out[t, block_of[p]] += X[t, p]
        for i in range(n_ds):
            out[t, i] *= inv_counts[i]
    return out


@numba.njit(cache=True)
def _binned_block_sums(y, block, bins, n_blocks, n_bins):  # pragma: no cover - numba
    """Sums (n_blocks, n_bins) of y (T, p) over the pixels of each block and the frames of each bin."""
    out = np.zeros((n_blocks, n_bins), np.float64)
    for t in range(y.shape[0]):
        bt = bins[t]
        for j in range(y.shape[1]):
            out[block[j], bt] += y[t, j]
    return out.astype(np.float32)


class InMemorySource(Source):
    """Batches of one spatial block, each used as a single (T_b, P) float32 array.

    Parameters
    ----------
    data : list of ndarray (T_b, h, w), or a callable ``load(b) -> ndarray (T_b, h, w)``
        The block's frames of each batch, or a loader (then ``shape`` is required).
    batches : list of (start, stop)
        Absolute frame ranges of the batches.
    shape : (h, w), optional
        Block shape (required with a loader).
    cache_bytes : int, optional
        With a loader: keep the most recently used batches up to this many bytes
        (default: keep all); others are loaded again when needed.
    """

    def __init__(self, data, batches: Sequence[tuple[int, int]], shape: tuple[int, int] | None = None,
                 cache_bytes: int | None = None):
        self.batches = [tuple(int(v) for v in be) for be in batches]
        if callable(data):
            if shape is None:
                raise ValueError("a loader needs the block shape")
            self._load = data
            self.shape = (int(shape[0]), int(shape[1]))
        else:
            if len(data) != len(self.batches):
                raise ValueError("one array per batch is required")
            arrays = [np.ascontiguousarray(d, dtype=np.float32) for d in data]
            self._load = arrays.__getitem__
            self.shape = tuple(int(v) for v in arrays[0].shape[1:])
        self.cache_bytes = cache_bytes
        self._cache: dict[int, np.ndarray] = {}

    def frames(self, b: int) -> np.ndarray:
        """Batch ``b`` as a (T_b, P) float32 array."""
        if b in self._cache:
            arr = self._cache.pop(b)
        else:
            arr = np.asarray(self._load(b), dtype=np.float32).reshape(self.n_frames(b), -1)
        if self.cache_bytes is None or arr.nbytes <= self.cache_bytes:
            self._cache[b] = arr  # most recent last
            while self.cache_bytes is not None and sum(a.nbytes for a in self._cache.values()) > self.cache_bytes:
                self._cache.pop(next(iter(self._cache)))
        return arr

    def _tiles(self, b):
        yield 0, np.arange(self.n_pixels), 0, self.frames(b)


#: Bytes of one tile read by :class:`AlignedMovieSource` (a constant, so that products are computed
#: in the same order, hence bit-identical, whatever the memory budget or the reader).
TILE_BYTES = 64 * 2 ** 20
#: Threads that read tiles in :func:`load_movie`.
LOAD_THREADS = 2
#: Spatial tile of :class:`AlignedMovieSource` (px).
TILE_SHAPE = (64, 64)


class AlignedMovieSource(Source):
    """Batches of the whole aligned movie, streamed in spatial tiles over time chunks.

    Parameters
    ----------
    store : AlignedStore
    batches : list of (start, stop)
        Absolute frame ranges.
    movie : ndarray (T, H, W), optional
        The movie already in memory; tiles are then sliced from it instead of read.
    """

    def __init__(self, store: AlignedStore, batches: Sequence[tuple[int, int]], movie: np.ndarray | None = None):
        self.store = store
        self.movie = movie
        _, h, w = store.shape
        self.shape = (int(h), int(w))
        self.batches = [tuple(int(v) for v in be) for be in batches]
        th, tw = min(TILE_SHAPE[0], h), min(TILE_SHAPE[1], w)
        self.chunk_frames = int(max(1, TILE_BYTES // (4 * th * tw)))
        self._tile_boxes = [(a, min(a + th, h), c, min(c + tw, w)) for a in range(0, h, th) for c in range(0, w, tw)]

    def _read(self, t0, t1, ys, xs):
        if self.movie is not None:
            return np.asarray(self.movie[t0:t1, ys, xs], dtype=np.float32)
        return self.store.read(t0, t1, ys, xs)

    def _tiles(self, b):
        start, stop = self.batches[b]
        w = self.shape[1]
        for tid, (a, a1, c, c1) in enumerate(self._tile_boxes):
            yy, xx = np.mgrid[a:a1, c:c1]
            pix = (yy * w + xx).ravel()
            for t0 in range(start, stop, self.chunk_frames):
                t1 = min(stop, t0 + self.chunk_frames)
                y = self._read(t0, t1, slice(a, a1), slice(c, c1))
                yield tid, pix, t0 - start, y.reshape(t1 - t0, -1)


def load_movie(store: AlignedStore) -> np.ndarray:
    """The whole movie as one float32 array (T, H, W), read tile by tile (validated)."""
    t, h, w = store.shape
    out = np.empty((t, h, w), np.float32)
    step = max(1, TILE_BYTES // (4 * min(TILE_SHAPE[0], h) * min(TILE_SHAPE[1], w)))
    boxes = [(slice(t0, min(t, t0 + step)), slice(a, min(h, a + TILE_SHAPE[0])), slice(c, min(w, c + TILE_SHAPE[1])))
             for a in range(0, h, TILE_SHAPE[0]) for c in range(0, w, TILE_SHAPE[1]) for t0 in range(0, t, step)]

    def fill(box) -> None:
        ts, ys, xs = box
        out[ts, ys, xs] = store.read(ts.start, ts.stop, ys, xs)

    # disjoint tiles; decompression, the finiteness check and the copy release the GIL
    with ThreadPoolExecutor(max_workers=LOAD_THREADS) as pool:
        list(pool.map(fill, boxes))
    return out
