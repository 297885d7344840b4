"""QC figures render to valid PNGs from the output formats."""

import numpy as np

from califlow import export, qc


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_figures_render(tmp_path):
    rng = np.random.default_rng(0)
    H, W, K = 60, 80, 6
    yy, xx = np.mgrid[:H, :W]
    A = np.stack([np.exp(-((yy - rng.uniform(10, 50)) ** 2 + (xx - rng.uniform(10, 70)) ** 2) / 8) for _ in range(K)])
    sessions = export.session_slices([{"name": "s1", "start": 0, "stop": 100, "fps": 10},
                                      {"name": "s2", "start": 100, "stop": 250, "fps": 10}])
    S = (rng.random((K, 250)) > 0.97).astype(np.float32)
    C = np.cumsum(S, axis=1)
    proj = {n: rng.random((H, W)) for n in ("mean", "bv", "cn", "pnr")}
    motion = np.cumsum(rng.normal(0, 0.2, (100, 2)), axis=0)
    for p in (qc.session_figure(proj, motion, 10.0, "m1 / s1", tmp_path / "a.png"),
              qc.footprints_figure(A, proj["cn"], tmp_path / "b.png"),
              qc.traces_figure(C, sessions, tmp_path / "c.png"),
              qc.raster_figure(S, sessions, tmp_path / "d.png"),
              qc.presence_figure(S, sessions, tmp_path / "e.png")):
        _png(p)
