"""End-to-end workflow: lint, the demo cohort, reruns, interruption, SLURM, bad input.

One demo run (2 animals x 3 sessions, simulated by the workflow) is shared by the tests of
this module; each test that needs another run uses its own working folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, make_workdir, output_hashes, run_snakemake, snakemake_cmd

from califlow.cohort_check import check_animals
from califlow.disk_budget import animal_budget
from califlow.io.store import bytes_in, open_group
from califlow.params import resolve_config
from califlow.sessions import read_sessions

pytestmark = pytest.mark.timeout(1800)


def test_lint():
    proc = subprocess.run([os.sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo cohort run once, as a user runs it (``snakemake --cores 2``)."""
    work = make_workdir(tmp_path_factory.mktemp("demo"))
    t0 = time.time()
    proc = run_snakemake(work)
    elapsed = time.time() - t0
    return {"work": work, "hashes": output_hashes(work / "results"), "elapsed": elapsed, "log": proc.stdout}


def test_demo_outputs_follow_the_contract(demo):
    res = demo["work"] / "results"
    sheet = pd.read_csv(REPO / "config" / "sessions.tsv", sep="\t")
    for animal, group in sheet.groupby("animal"):
        a = res / animal
        for session in group["session"]:
            s = a / "sessions" / session
            motion = pd.read_csv(s / "motion.csv")
            assert list(motion.columns) == ["frame", "dy", "dx"] and len(motion) == 300
            proj = open_group(s / "projections.zarr")
            for name in ("mean", "bv", "cn", "pnr"):
                assert proj[name].dtype == np.float32 and proj[name].ndim == 2
            assert not (s / "ingest.zarr").exists() and not (s / "enhanced.zarr").exists()  # temp()
        aligned = open_group(a / "aligned.zarr")
        assert aligned["movie"].shape[0] == 300 * len(group)
        assert [x["name"] for x in aligned.attrs["sessions"]] == list(group["session"])
        cn = open_group(a / "cnmfe.zarr")
        K = cn["A"].shape[0]
        assert K >= 10 and cn["C"].shape == (K, 300 * len(group)) and cn["S"].shape == cn["C"].shape
        assert "params" in cn.attrs and "califlow_version" in cn.attrs
        cells = pd.read_csv(a / "cells.csv", keep_default_na=False)
        assert len(cells) == K and set(cells["status"]) <= {"accepted", "rejected", "undecided"}
        assert {"fp_corr_" + group["session"].iloc[0], "background_ratio", "reason"} <= set(cells.columns)
        assert (cells["status"] == "accepted").mean() >= 0.7, cells[["cell", "status", "reason"]]
        assert (a / "cells.html").stat().st_size > 10_000
        events = pd.read_csv(a / "events.csv")
        assert list(events.columns) == ["cell", "session", "frame", "time_s", "amplitude", "status"]
        assert set(events["session"]) <= set(group["session"]) and len(events) > 0


def test_demo_accuracy_against_ground_truth(demo):
    """The demo's extraction finds the simulated neurons (a smoke-level accuracy floor)."""
    from califlow.metrics import match_neurons
    from califlow.simulate import load_ground_truth

    work = demo["work"]
    gt = load_ground_truth(work / "resources" / "demo" / "demo1" / "ground_truth.zarr")
    A = open_group(work / "results" / "demo1" / "cnmfe.zarr")["A"][...]
    active = gt.active.any(axis=1)
    ref = gt.footprints_ref[active]
    # the aligned frame is the groupwise mean frame, cropped: register before matching
    m = match_neurons(ref, _fit(A, ref.shape[1:]), register=True)
    assert m.recall >= 0.8 and m.precision >= 0.8, (m.precision, m.recall)


def _fit(A, shape):
    """Pad/crop the aligned-frame footprints to the reference frame size (centred)."""
    K, H, W = A.shape
    out = np.zeros((K, *shape), A.dtype)
    h, w = min(H, shape[0]), min(W, shape[1])
    oy, ox = (shape[0] - h) // 2, (shape[1] - w) // 2
    iy, ix = (H - h) // 2, (W - w) // 2
    out[:, oy:oy + h, ox:ox + w] = A[:, iy:iy + h, ix:ix + w]
    return out


def test_rerun_with_nothing_changed_does_nothing(demo):
    proc = run_snakemake(demo["work"], "-n")
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


def test_the_disk_estimate_printed_at_start_bounds_what_the_run_wrote(demo, monkeypatch):
    """With the recordings there, the start prints each animal's estimate; the stores the run wrote
    are no larger (it is an upper bound) and not much smaller (it is still an estimate)."""
    proc = run_snakemake(demo["work"], "-n")
    assert "califlow disk estimate (uncompressed, an upper bound" in proc.stdout, proc.stdout[:2000]
    monkeypatch.chdir(demo["work"])
    cfg = resolve_config(yaml.safe_load(Path("config/config.yaml").read_text()))
    probes = check_animals(read_sessions("config/sessions.tsv"), cfg)
    for animal in ("demo1", "demo2"):
        b = animal_budget(probes[animal])
        res = demo["work"] / "results" / animal
        assert f"{animal}: 3 session(s), 900 frames of {b.shape[0]}x{b.shape[1]} px: aligned.zarr" in proc.stdout
        aligned = bytes_in(res / "aligned.zarr")
        assert 0.5 * b.aligned <= aligned <= b.aligned, (aligned, b)
        K = open_group(res / "cnmfe.zarr")["A"].shape[0]
        per_neuron = bytes_in(res / "cnmfe.zarr") + sum(bytes_in(d) for d in res.glob("sessions/*/export"))
        assert 0.4 * K * b.per_100_neurons / 100 <= per_neuron <= K * b.per_100_neurons / 100, (per_neuron, K, b)


#: Started by Python when its folder is on PYTHONPATH: psutil then reports another total RAM.
FAKE_RAM = """
import os
import psutil

_real = psutil.virtual_memory


def _fake():
    return _real()._replace(total=int(os.environ["CALIFLOW_TEST_FAKE_RAM"]))


psutil.virtual_memory = _fake
"""


@pytest.mark.parametrize("ram_gb", [3, 512])
def test_the_rerun_set_does_not_depend_on_the_host_memory(demo, tmp_path, ram_gb):
    """The same config on a machine with other RAM reruns nothing (no host value in a rule's params)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAKE_RAM)
    env = {**os.environ, "PYTHONPATH": str(site), "CALIFLOW_TEST_FAKE_RAM": str(ram_gb * 10 ** 9)}
    seen = subprocess.run([os.sys.executable, "-c", "import psutil; print(psutil.virtual_memory().total)"],
                          env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    assert int(seen) == ram_gb * 10 ** 9  # the fake is in place
    proc = run_snakemake(demo["work"], "-n", env=env)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


def _planned_rules(proc_stdout: str) -> set[str]:
    rules = set()
    for line in proc_stdout.splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rules.add(line[5:-1])
        elif line.startswith("localrule ") and line.endswith(":"):
            rules.add(line[10:-1])
    return rules


AFTER_CNMFE = {"cnmfe", "cell_qc", "cell_browser", "events_table", "export_session", "qc_animal", "qc_seeds",
               "spike_extraction"}
AFTER_CURATION = {"cell_qc", "cell_browser", "events_table", "export_session"}
# the enhanced movies are temporary: re-concatenating recomputes each session's chain
# (Snakemake reruns what consumes a regenerated file: motion_correct and its QC too)
SESSION_CHAIN = {"ingest", "motion_correct", "enhance", "qc_session"}
AFTER_ALIGN = SESSION_CHAIN | {"align_sessions", "concatenate"} | AFTER_CNMFE


@pytest.mark.parametrize("extra, expected", [
    ("spike_extraction:\n  s_min: 0.5\n", {"spike_extraction"}),
    ("cnmfe:\n  min_pnr: 8\n", AFTER_CNMFE),
    ("inter_session_alignment:\n  final_neurons: true\n", AFTER_ALIGN),
    ("export:\n  lab: Vision Lab\n", {"export_session"}),
    ("curation:\n  min_snr: 2.0\n", AFTER_CURATION),
])
def test_parameter_change_reruns_only_affected_jobs(demo, extra, expected, tmp_path):
    cfg = tmp_path / "extra.yaml"
    cfg.write_text(extra)
    proc = run_snakemake(demo["work"], "-n", "--configfile", str(demo["work"] / "config" / "config.yaml"),
                         str(cfg))
    planned = _planned_rules(proc.stdout) - {"all"}
    # the report's configuration page lists every parameter: any change rewrites it (a few ms)
    assert planned == expected | {"report_configuration"}, proc.stdout[-4000:]


def test_manual_curation_reruns_only_cell_qc_and_the_exports(demo, tmp_path):
    """A user rejects a cell in curation/demo1.csv: only cell_qc, the browser and the exports rerun,
    and the status reaches cells.csv, events.csv, the Inscopix cell sets and NWB."""
    isx = pytest.importorskip("isx")
    work = tmp_path / "copy"
    shutil.copytree(demo["work"], work, symlinks=True)
    cells = pd.read_csv(work / "results" / "demo1" / "cells.csv", keep_default_na=False)
    edited = cells[["cell", "status", "reason"]].copy()
    edited.loc[edited["cell"] == 0, "status"] = "rejected"
    edited.loc[edited["cell"] == 0, "reason"] = "not a soma"
    (work / "curation").mkdir()
    edited.to_csv(work / "curation" / "demo1.csv", index=False)
    planned = _planned_rules(run_snakemake(work, "-n").stdout) - {"all"}
    assert planned == AFTER_CURATION, planned
    before = output_hashes(work / "results")
    run_snakemake(work)
    after = output_hashes(work / "results")
    assert after["demo1/cnmfe.zarr"] == before["demo1/cnmfe.zarr"]
    assert after["demo2/cells.csv"] == before["demo2/cells.csv"]
    back = pd.read_csv(work / "results" / "demo1" / "cells.csv", keep_default_na=False)
    assert back.loc[0, ["status", "reason"]].tolist() == ["rejected", "manual: not a soma"]
    assert (back["status"].iloc[1:] == cells["status"].iloc[1:]).all()
    events = pd.read_csv(work / "results" / "demo1" / "events.csv")
    assert set(events.loc[events["cell"] == 0, "status"]) <= {"rejected"}
    export = sorted((work / "results" / "demo1" / "sessions").glob("*/export"))[0]
    cs = isx.CellSet.read(str(export / "cellset_raw.isxd"))
    assert cs.get_cell_status(0) == "rejected" and cs.get_cell_status(1) == back.loc[1, "status"]
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(next(export.glob("*.nwb"))), "r") as io:
        ps = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert ps["status"][0] == "rejected" and ps["reason"][0] == "manual: not a soma"
        assert 0.5 < float(ps["session_fp_corr"][1]) <= 1.0


def test_kill_and_resume_gives_identical_outputs(demo, tmp_path):
    """SIGKILL mid-run, resume with --rerun-incomplete: outputs equal an uninterrupted run."""
    work = make_workdir(tmp_path / "kill")
    env = dict(os.environ, XDG_CACHE_HOME=str(work / ".cache"))
    proc = subprocess.Popen(snakemake_cmd(work), cwd=work, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = work / "results" / "demo1" / "aligned.zarr"
    deadline = time.time() + 900
    # kill once the per-animal stage has started (a job is running and outputs are half made)
    while time.time() < deadline and not (work / "logs" / "demo1" / "concatenate.log").exists():
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()  # killed while concatenating: no half-written store under its name
    run_snakemake(work, "--unlock")  # SIGKILL leaves Snakemake's lock behind
    run_snakemake(work, "--rerun-incomplete")
    hashes = output_hashes(work / "results")
    assert hashes == demo["hashes"]


def _slurm_up() -> bool:
    try:
        out = subprocess.run(["scontrol", "ping"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=10).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return "UP" in out


@pytest.mark.slurm
@pytest.mark.skipif(not _slurm_up(), reason="no SLURM controller (start one with tests/slurm/start_slurm.sh)")
def test_slurm_run_equals_local_run(demo, tmp_path):
    """The demo on SLURM with CNMF-E scattered over 2 patch jobs: the same outputs as the local
    single-job run, and each patch job asks for the memory its patches need by the plan."""
    from califlow.cnmfe.pipeline import patch_job_memory_bytes

    work = make_workdir(tmp_path / "slurm")
    config = work / "config" / "config.yaml"
    config.write_text(config.read_text().replace("  patch_jobs: 0\n", "  patch_jobs: 2\n"))
    shutil.copytree(REPO / "profiles", work / "profiles", symlinks=True)
    t0 = time.time()
    proc = run_snakemake(work, "--profile", str(REPO / "profiles" / "slurm"),
                         "--slurm-init-seconds-before-status-checks", "2",
                         "--seconds-between-status-checks", "2", cores=2, timeout=1700)
    elapsed = time.time() - t0
    assert "slurm" in proc.stdout.lower()
    assert output_hashes(work / "results") == demo["hashes"]
    cfg = resolve_config(yaml.safe_load(config.read_text()))
    asked = _patch_job_requests(proc.stdout)
    assert len(asked) == 4, proc.stdout[-3000:]  # 2 animals x 2 jobs
    for (animal, job), mem_mb in asked.items():
        need = patch_job_memory_bytes(work / "results" / animal / "aligned.zarr", cfg, job, 2)
        assert mem_mb == -(-need // 10**6) + 1000, (animal, job, mem_mb, need)
    print(f"SLURM demo run: {elapsed:.0f} s (local: {demo['elapsed']:.0f} s); patch jobs asked {asked} MB")


def _patch_job_requests(log: str) -> dict[tuple[str, int], int]:
    """``{(animal, job): mem_mb}`` of the cnmfe_patches jobs in Snakemake's job listing."""
    import re

    out = {}
    for block in re.findall(r"rule cnmfe_patches:\n(.*?)(?:\n\s*\n|$)", log, flags=re.S):
        wc = re.search(r"wildcards: animal=(\w+), job=(\d+)", block)
        mem = re.search(r"resources: .*?\bmem_mb=(\d+)", block)
        if wc and mem:
            out[(wc.group(1), int(wc.group(2)))] = int(mem.group(1))
    return out


def test_a_gsig_far_from_the_data_is_loud_and_harmless(demo, tmp_path):
    """gSig 1.0 on the demo's 7-8 px neurons: warned in the logs, on the console and on the
    report's front page; the sizes use the measured floor, so the extraction still works."""
    from califlow.metrics import match_neurons
    from califlow.simulate import load_ground_truth

    sheet = "animal\tsession\tpath\tfps\n" + "".join(
        f"demo1\t{s}\tresources/demo/demo1/{s}\t\n" for s in ("s1", "s2", "s3"))
    work = make_workdir(tmp_path / "small_gsig", sheet=sheet, config_extra="general:\n  gSig: 1.0\n")
    shutil.copytree(demo["work"] / "resources", work / "resources")
    proc = run_snakemake(work)
    message = "demo1: gSig 1 looks small for these data"
    assert f"califlow WARNING: {message}" in proc.stdout, proc.stdout[-3000:]
    for job in ("neuron_size", "cnmfe", "align_sessions"):
        assert "looks small for these data" in (work / "logs" / "demo1" / f"{job}.log").read_text(), job
    size = pd.read_json(work / "results" / "demo1" / "neuron_size.json", typ="series")
    assert size["gSig_configured"] == 1.0 and 2.0 < size["gSig"] < 3.0
    run_snakemake(work, "--report", "report.html")
    assert message.split(": ", 1)[1] in (work / "report.html").read_text()
    gt = load_ground_truth(work / "resources" / "demo" / "demo1" / "ground_truth.zarr")
    A = open_group(work / "results" / "demo1" / "cnmfe.zarr")["A"][...]
    ref = gt.footprints_ref[gt.active.any(axis=1)]
    m = match_neurons(ref, _fit(A, ref.shape[1:]), register=True)
    assert m.recall >= 0.8 and m.precision >= 0.8, (m.precision, m.recall)
