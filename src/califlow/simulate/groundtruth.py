"""Ground truth of one simulated animal, and its file (``ground_truth.zarr``).

Conventions (shared with the whole library): images (H, W), coordinates (y, x) in raw-frame
pixels, T_total = frames of all sessions concatenated in session order.

File layout written by :func:`save_ground_truth` (a Zarr 3 group, written atomically)
-------------------------------------------------------------------------------------
attrs
    ``califlow_version``, ``config`` (the :class:`SimulationConfig` as a dict), ``seed``,
    ``fps`` (Hz), ``shape`` [H, W], ``n_neurons`` K, ``n_sessions`` S,
    ``footprint_source`` ("real" | "gaussian"), ``format_version`` 1.
``centers_ref`` (K, 2) float64
    Intensity centroid (y, x) of each footprint in the reference frame (px).
``footprints_ref_{data,indices,indptr}``
    CSR matrix (K, H*W) float32: neuron shapes in the reference frame, maximum 1, no
    illumination, no vessel shading, no halo.
``footprints_{data,indices,indptr}``
    CSR matrix (S*K, H*W) float32; row s*K + k is neuron k as the sensor records it in session
    s at zero motion: deformed shape x illumination x vessel transmission, so that the
    neuron's contribution to a motion-free frame t is ``footprints[s, k] * C[k, t]`` (DN).
``C`` (K, T_total) float32
    Noise-free calcium in DN at a footprint value of 1 (zero in inactive sessions).
``S`` (K, T_total) float32
    Event amplitudes (DN): C is S filtered with each neuron's double-exponential kernel of
    peak 1 (``tau_rise``, ``tau_decay`` (K,) float32, seconds).
``active`` (K, S) bool
    Whether the neuron fires in the session (turnover).
``session_bounds`` (S+1,) int64
    Session s spans frames ``session_bounds[s]:session_bounds[s+1]`` of C, S, motion.
``motion`` (T_total, 2) float32
    Within-session rigid translation d_t = (dy, dx) px: ``raw_t(p + d_t) = static_s(p)``.
``translations`` (S, 2) float32
    Rigid part of the reference-to-session displacement (px).
``maps`` (S, 2, H, W) float32
    ``maps[s, :, i, j]`` = (y, x) position in session s's motion-free frame of the tissue
    at reference pixel (i, j) (absolute coordinates; may lie outside [0, H) x [0, W), never NaN).
``vessels`` (H, W), ``vessels_session`` (S, H, W) float32
    Vessel map in [0, 1] (1 = vessel centre) in the reference frame and per session frame.
``baseline_session`` (S, H, W) float32
    Noise-free session frame at zero motion with silent neurons and background
    fluctuations at zero (DN above the dark offset ``config.offset``).
``illumination`` (H, W) float32
    Sensor-fixed illumination (vignetting), 1 on the optical axis.
``wobble_basis`` (S, J, 2, H, W), ``wobble_coef`` (T_total, J) float32
    Within-session non-rigid wobble (J = 0 when the config has no wobble): frame t samples
    the static session image at ``q - d_t - sum_j coef[t, j] * basis[s, j, :, q]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from califlow.errors import InputError

__all__ = ["GroundTruth", "save_ground_truth", "load_ground_truth"]

_ARRAYS = ("centers_ref", "C", "S", "active", "session_bounds", "translations", "maps", "vessels",
           "vessels_session", "baseline_session", "illumination", "wobble_basis", "wobble_coef",
           "tau_rise", "tau_decay")


@dataclass
class GroundTruth:
    """Known answers for one simulated animal (see the module docstring for every array).

    Footprints are held sparse; :attr:`footprints_ref` and :attr:`footprints` build dense
    (K, H, W) / (S, K, H, W) float32 arrays on access (use :meth:`session_footprints` or the
    ``*_sparse`` matrices for large FOVs).
    """

    shape: tuple[int, int]
    fps: float
    seed: int
    config: dict
    footprint_source: str
    centers_ref: np.ndarray
    footprints_ref_sparse: sp.csr_matrix
    footprints_sparse: sp.csr_matrix
    C: np.ndarray
    S: np.ndarray
    tau_rise: np.ndarray
    tau_decay: np.ndarray
    active: np.ndarray
    session_bounds: np.ndarray
    motion_concat: np.ndarray
    translations: np.ndarray
    maps: np.ndarray
    vessels: np.ndarray
    vessels_session: np.ndarray
    baseline_session: np.ndarray
    illumination: np.ndarray
    wobble_basis: np.ndarray
    wobble_coef: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return int(self.centers_ref.shape[0])

    @property
    def n_sessions(self) -> int:
        return int(len(self.session_bounds) - 1)

    @property
    def motion(self) -> list[np.ndarray]:
        """Per-session within-session translation, list of (T_s, 2) float32 (dy, dx)."""
        b = self.session_bounds
        return [self.motion_concat[b[s]:b[s + 1]] for s in range(self.n_sessions)]

    def session_slice(self, s: int) -> slice:
        """Frames of session ``s`` in C, S and motion."""
        return slice(int(self.session_bounds[s]), int(self.session_bounds[s + 1]))

    @property
    def footprints_ref(self) -> np.ndarray:
        """(K, H, W) float32 reference-frame footprints (dense copy)."""
        return self.footprints_ref_sparse.toarray().reshape(-1, *self.shape)

    @property
    def footprints(self) -> np.ndarray:
        """(S, K, H, W) float32 per-session footprints (dense copy)."""
        return self.footprints_sparse.toarray().reshape(self.n_sessions, self.n_neurons, *self.shape)

    def session_footprints(self, s: int) -> np.ndarray:
        """(K, H, W) float32 footprints of session ``s`` (dense copy)."""
        k = self.n_neurons
        return self.footprints_sparse[s * k:(s + 1) * k].toarray().reshape(k, *self.shape)

    def centers_session(self) -> np.ndarray:
        """(S, K, 2) positions of the reference centres in each session frame (via ``maps``)."""
        from califlow.simulate.anatomy import sample_bilinear

        out = np.empty((self.n_sessions, self.n_neurons, 2), np.float32)
        y, x = self.centers_ref[:, 0], self.centers_ref[:, 1]
        for s in range(self.n_sessions):
            for c in range(2):
                out[s, :, c] = sample_bilinear(self.maps[s, c], y, x)
        return out


def _write_csr(group, name: str, m: sp.csr_matrix) -> None:
    from califlow.io.store import create_image

    m = m.tocsr()
    create_image(group, f"{name}_data", m.data.astype(np.float32))
    create_image(group, f"{name}_indices", m.indices.astype(np.int64))
    create_image(group, f"{name}_indptr", m.indptr.astype(np.int64))


def _read_csr(group, name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((group[f"{name}_data"][...], group[f"{name}_indices"][...],
                          group[f"{name}_indptr"][...]), shape=shape)


def save_ground_truth(gt: GroundTruth, path: str | os.PathLike) -> Path:
    """Write ``gt`` to the Zarr store ``path`` (atomically); returns the path."""
    import zarr

    from califlow.io.store import atomic_output, create_image, provenance

    path = Path(path)
    with atomic_output(path) as tmp:
        g = zarr.open_group(str(tmp), mode="w")
        for name in _ARRAYS:
            create_image(g, name, np.ascontiguousarray(getattr(gt, name)))
        create_image(g, "motion", np.ascontiguousarray(gt.motion_concat))
        _write_csr(g, "footprints_ref", gt.footprints_ref_sparse)
        _write_csr(g, "footprints", gt.footprints_sparse)
        g.attrs.update(provenance(params=gt.config, seed=int(gt.seed), fps=float(gt.fps), shape=list(gt.shape),
                                  n_neurons=gt.n_neurons, n_sessions=gt.n_sessions,
                                  footprint_source=gt.footprint_source, format_version=1,
                                  config=gt.config, extra=gt.extra))
    return path


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a store written by :func:`save_ground_truth`.

    Raises
    ------
    InputError
        The path is not a ground-truth store (names the path and the missing item).
    """
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise InputError(f"{path} is not a ground-truth store (no zarr.json); write it with save_ground_truth")
    g = zarr.open_group(str(path), mode="r")
    a = dict(g.attrs)
    try:
        shape = tuple(int(v) for v in a["shape"])
        k, s = int(a["n_neurons"]), int(a["n_sessions"])
        arrays = {name: g[name][...] for name in _ARRAYS}
        return GroundTruth(
            shape=shape, fps=float(a["fps"]), seed=int(a["seed"]), config=dict(a["config"]),
            footprint_source=str(a["footprint_source"]),
            footprints_ref_sparse=_read_csr(g, "footprints_ref", (k, shape[0] * shape[1])),
            footprints_sparse=_read_csr(g, "footprints", (s * k, shape[0] * shape[1])),
            motion_concat=g["motion"][...], extra=dict(a.get("extra", {})), **arrays)
    except KeyError as exc:
        raise InputError(f"{path}: ground-truth store lacks {exc.args[0]!r} (incomplete or not written by "
                         "califlow.simulate.save_ground_truth)") from None
