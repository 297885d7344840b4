"""End-to-end CNMF-E on a small simulated animal: accuracy, outputs, scatter/gather, bad inputs."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

from califlow.cnmfe import plan, run_cnmfe, run_patch_job
from califlow.cnmfe.simulated import write_aligned_store
from califlow.errors import ConfigError, InputError
from califlow.metrics import score_extraction
from califlow.simulate import preset, simulate_animal

CONFIG = {"cnmfe": {"patch_dims": [40, 40], "w_overlap": 16, "memory_size_to_use": 2}}


@pytest.fixture(scope="module")
def animal():
    cfg = preset("demo", height=80, width=80, n_sessions=2, frames_per_session=300, n_neurons=12,
                 n_vessels=1, n_local_sources=2, translation=0.0, deformation=0.0)
    return simulate_animal(cfg, seed=3)


@pytest.fixture(scope="module")
def aligned(animal, tmp_path_factory):
    path = tmp_path_factory.mktemp("cnmfe") / "aligned.zarr"
    write_aligned_store(animal, path)
    return path


@pytest.fixture(scope="module")
def extraction(aligned, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnmfe_out")
    ex = run_cnmfe(aligned, out / "cnmfe.zarr", CONFIG, cells_path=out / "cells.csv")
    return ex, out


def test_extraction_matches_ground_truth(animal, extraction):
    ex, _ = extraction
    gt = animal.ground_truth
    r = score_extraction(gt, ex.A, ex.C, ex.S, active_est=ex.active)
    assert r["recall"] >= 0.9, r
    assert r["precision"] >= 0.9, r
    assert r["trace_r"] >= 0.9, r
    assert r["spike_r"] >= 0.7, r
    assert r["tracking"]["f1"] >= 0.9, r["tracking"]


def test_outputs_follow_the_contract(aligned, extraction):
    ex, out = extraction
    g = zarr.open_group(str(out / "cnmfe.zarr"), mode="r")
    src = zarr.open_group(str(aligned), mode="r")
    T, H, W = src["movie"].shape
    K = ex.C.shape[0]
    assert g["A"].shape == (K, H, W) and g["C"].shape == (K, T) and g["C_raw"].shape == (K, T)
    assert g["S"].shape == (K, T) and g["A_sessions"].shape == (2, K, H, W)
    assert g["b0"].shape == (H, W) and g["Cn"].shape == (H, W) and g["PNR"].shape == (H, W)
    snr = g["snr"][...]
    assert np.all(np.diff(snr) <= 0), "neurons are ordered by decreasing SNR"
    assert np.allclose(g["A"][...].reshape(K, -1).max(axis=1), 1.0)
    assert g.attrs["params"]["cnmfe"]["patch_dims"] == [40, 40]
    assert [s["name"] for s in g.attrs["sessions"]] == ["session0", "session1"]
    # per-session footprints of a neuron resemble its footprint
    A = g["A"][...].reshape(K, -1)
    As = g["A_sessions"][...].reshape(2, K, -1)
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty per-session footprint gives NaN
        r = [np.corrcoef(A[k], As[s, k])[0, 1] for k in range(K) for s in range(2) if ex.active[k, s]]
    assert np.nanmedian(r) > 0.9 and np.mean(np.isfinite(r)) > 0.8
    with open(out / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == K
    assert {"cell", "centroid_y", "centroid_x", "snr", "events_session0", "active_session1"} <= set(rows[0])
    assert float(rows[0]["snr"]) >= float(rows[-1]["snr"])


def test_scatter_gather_gives_identical_results(aligned, extraction, tmp_path):
    ex, _ = extraction
    files = []
    for job in range(3):
        f = tmp_path / f"job{job}.npz"
        run_patch_job(aligned, f, CONFIG, job, 3)
        files.append(f)
    ex2 = run_cnmfe(aligned, tmp_path / "cnmfe.zarr", CONFIG, patch_files=files)
    ex3 = run_cnmfe(aligned, tmp_path / "pool.zarr", CONFIG, n_processes=2)  # process pool
    for name in ("A", "C", "C_raw", "S", "A_sessions", "ids"):
        np.testing.assert_array_equal(getattr(ex2, name), getattr(ex, name), err_msg=name)
    # pool workers run with cores // workers BLAS threads, and OpenBLAS's sums depend on its
    # thread count (numba's kernels do not): the same components to float32 rounding
    np.testing.assert_array_equal(ex3.ids, ex.ids)
    for name in ("A", "C", "C_raw", "S", "A_sessions"):
        ref = getattr(ex, name)
        np.testing.assert_allclose(getattr(ex3, name), ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()),
                                   err_msg=name)


def test_pool_equals_one_process_at_the_same_blas_threads(aligned, tmp_path):
    """With one BLAS thread in the parent too, a process pool gives the very same arrays."""
    code = (f"import numpy as np\nfrom califlow.cnmfe import run_cnmfe\nC = {CONFIG!r}\n"
            f"if __name__ == '__main__':\n"
            f"    a = run_cnmfe({str(aligned)!r}, {str(tmp_path / 'a.zarr')!r}, C, n_processes=1)\n"
            f"    b = run_cnmfe({str(aligned)!r}, {str(tmp_path / 'b.zarr')!r}, C, n_processes=2)\n"
            f"    assert all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ('A', 'C', 'C_raw', 'S'))\n")
    script = tmp_path / "pool.py"
    script.write_text(code)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_tiny_memory_budget_streams_and_splits(aligned, tmp_path):
    p = plan(aligned, {"cnmfe": {**CONFIG["cnmfe"], "memory_size_to_use": 0.7}})
    assert not p.keep_movie() or p.store.shape[0] * 80 * 80 * 4 <= 0.35e9
    budget = p.patch_budget()
    patch = p.patches[0]
    sub = p.patch_batches(patch, 3 * 4.0 * patch.block_shape[0] * patch.block_shape[1] * 100)
    assert len(sub) == 6 and sub[0] == (0, 100) and sub[-1][1] == 600
    assert budget > 0


def test_scatter_job_memory_follows_the_plan_and_changes_no_sub_batch(aligned):
    """A scatter job asks for what its patches need by the plan (not the profile's constant),
    and given just that it plans the same batches as a job with any larger budget."""
    from califlow.cnmfe.pipeline import OVERHEAD_BYTES, patch_groups, patch_job_memory_bytes
    from califlow.host import JOB_OVERHEAD_GB, with_memory_budget

    loose = {"cnmfe": {**CONFIG["cnmfe"], "memory_size_to_use": None}}
    big = plan(aligned, CONFIG)
    for job in range(3):
        need = patch_job_memory_bytes(aligned, loose, job, 3)
        block = max(big.patches[i].block_shape[0] * big.patches[i].block_shape[1]
                    for i in patch_groups(len(big.patches), 3)[job])
        assert need == OVERHEAD_BYTES + 4 * block * (3 * 300 + 2 * 600)  # 2 sessions of 300 frames
        given = with_memory_budget(plan(aligned, loose).config, need / 1e6 + 1000 * JOB_OVERHEAD_GB)
        p = plan(aligned, given)
        for i in patch_groups(len(p.patches), 3)[job]:
            assert p.patch_batches(p.patches[i], p.patch_budget()) == big.batches == [(0, 300), (300, 600)]
    assert patch_job_memory_bytes(aligned, loose, 9, 10) == OVERHEAD_BYTES  # no patch in this job
    capped = {"cnmfe": {**loose["cnmfe"], "memory_size_per_patch": 0.001}}
    assert patch_job_memory_bytes(aligned, capped, 0, 3) == OVERHEAD_BYTES + 1e6


# --- bad inputs ----------------------------------------------------------------------------
def _copy(aligned, tmp_path):
    dst = tmp_path / "aligned.zarr"
    shutil.copytree(aligned, dst)
    return dst


def test_missing_store_is_named(tmp_path):
    with pytest.raises(InputError, match="nothere.zarr"):
        run_cnmfe(tmp_path / "nothere.zarr", tmp_path / "out.zarr", CONFIG)
    assert not (tmp_path / "out.zarr").exists()


def test_nan_frame_is_named_and_leaves_no_output(aligned, tmp_path):
    dst = _copy(aligned, tmp_path)
    g = zarr.open_group(str(dst), mode="r+")
    g["movie"][123, 5, 7] = np.nan
    with pytest.raises(InputError, match="frame 123"):
        run_cnmfe(dst, tmp_path / "out.zarr", CONFIG, cells_path=tmp_path / "cells.csv")
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "cells.csv").exists()
    assert not list(tmp_path.glob(".out.zarr.tmp*"))


def test_inconsistent_sessions_are_named(aligned, tmp_path):
    dst = _copy(aligned, tmp_path)
    g = zarr.open_group(str(dst), mode="r+")
    sess = g.attrs["sessions"]
    sess[1]["stop"] = 999
    g.attrs["sessions"] = sess
    with pytest.raises(InputError, match="sessions"):
        run_cnmfe(dst, tmp_path / "out.zarr", CONFIG)


def test_projection_shape_mismatch_is_named(aligned, tmp_path):
    dst = _copy(aligned, tmp_path)
    g = zarr.open_group(str(dst), mode="r+")
    del g["pnr"]
    g.create_array("pnr", shape=(2, 10, 10), dtype="float32")
    with pytest.raises(InputError, match="pnr"):
        run_cnmfe(dst, tmp_path / "out.zarr", CONFIG)


def test_bad_parameter_is_named(aligned, tmp_path):
    with pytest.raises(ConfigError, match="min_corr"):
        run_cnmfe(aligned, tmp_path / "out.zarr", {"cnmfe": {"min_corr": 2}})
    with pytest.raises(ConfigError, match="deconv_options"):
        run_cnmfe(aligned, tmp_path / "out.zarr", {"cnmfe": {"deconv_options": {"type": "ar3"}}})


def test_incomplete_patch_results_are_refused(aligned, tmp_path):
    f = tmp_path / "job0.npz"
    run_patch_job(aligned, f, CONFIG, 0, 4)
    with pytest.raises(InputError, match="missing patch"):
        run_cnmfe(aligned, tmp_path / "out.zarr", CONFIG, patch_files=[f])
    with pytest.raises(InputError, match="out of range"):
        run_patch_job(aligned, tmp_path / "x.npz", CONFIG, 5, 4)


def test_parameter_variants_run_and_stay_accurate(animal, aligned, tmp_path):
    """batch_sz > 0 (batches across sessions), no in-loop deconvolution, nnls, constraints, ellipse search."""
    cfg = {"cnmfe": {**CONFIG["cnmfe"], "batch_sz": 200, "deconv_flag": False, "spatial_algorithm": "nnls",
                     "spatial_constraints": {"connected": True, "circular": True}, "with_dendrites": False}}
    ex = run_cnmfe(aligned, tmp_path / "cnmfe.zarr", cfg)
    assert ex.A_sessions.shape[0] == 2  # per-session footprints even with 3 batches
    r = score_extraction(animal.ground_truth, ex.A, ex.C, ex.S, active_est=ex.active)
    assert r["f1"] >= 0.9 and r["trace_r"] >= 0.85, r
    g = zarr.open_group(str(tmp_path / "cnmfe.zarr"), mode="r")
    assert g.attrs["batches"] == [[0, 200], [200, 400], [400, 600]]


def test_no_seed_gives_empty_outputs(aligned, tmp_path):
    ex = run_cnmfe(aligned, tmp_path / "cnmfe.zarr", {"cnmfe": {**CONFIG["cnmfe"], "min_pnr": 1e4}},
                   cells_path=tmp_path / "cells.csv")
    g = zarr.open_group(str(tmp_path / "cnmfe.zarr"), mode="r")
    assert ex.C.shape[0] == 0 and g["A"].shape == (0, 80, 80) and g["A_sessions"].shape == (2, 0, 80, 80)
    assert len((tmp_path / "cells.csv").read_text().splitlines()) == 1


def test_iterate_compares_traces_with_the_previous_iteration(aligned):
    """The convergence test sees the traces before the iteration (not views updated in place)."""
    from califlow.cnmfe.data import InMemorySource
    from califlow.cnmfe.fit import Fitter
    from califlow.cnmfe.initialize import initialize

    p = plan(aligned, CONFIG)
    movie = zarr.open_group(str(aligned), mode="r")["movie"][...]
    source = InMemorySource(lambda b: np.array(movie[p.batches[b][0]:p.batches[b][1]]), p.batches,
                            shape=movie.shape[1:])
    model = initialize(source, p.seeds, np.arange(len(p.seeds)), p.opts)
    assert model.K >= 5
    # traces far from the fit: the first iteration changes them a lot, so one is not enough
    rng = np.random.default_rng(0)
    model.C = (model.C * 0 + rng.random(model.C.shape)).astype(np.float32)
    seen = []
    fitter = Fitter(source, p.opts)
    original = fitter.update_background

    def spy(m):
        seen.append(m.C.copy())
        original(m)

    fitter.update_background = spy
    n = fitter.iterate(model, 3)
    assert n >= 2, "iterate stopped after one iteration although the traces changed"
    assert len(seen) == n
