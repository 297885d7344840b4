"""Bad input, end to end through the workflow: each case stops with a message naming the
culprit (before any job, or in the job that reads it) and leaves no half-written output, or
is handled as documented (dropped frames, sessions of different field-of-view sizes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_io_helpers import gapped_times_ms, movie_u8, write_avi, write_miniscope_v4
from workflow_helpers import make_workdir, run_snakemake, snakemake_cmd

pytestmark = pytest.mark.timeout(900)

INGEST = "results/m1/sessions/s1/ingest.json"


def _sheet(rows):
    return "animal\tsession\tpath\n" + "".join(f"{a}\t{s}\t{p}\n" for a, s, p in rows)


def _no_leftovers(work: Path):
    res = work / "results"
    if res.exists():
        left = [p for p in res.rglob("*") if ".tmp-" in p.name or p.name == "ingest.zarr"]
        assert left == [], left


def _run(work, *targets, extra=()):
    return run_snakemake(work, *targets, *extra, cores=1, check=False, timeout=600)


# --- cases that stop before any job runs (sheet, config and path checks) -------------------

def _missing_file(d):
    return _sheet([("m1", "s1", d / "nope.avi")]), "", "path", "does not exist"


def _empty_folder(d):
    (d / "empty").mkdir()
    return _sheet([("m1", "s1", d / "empty")]), "", "empty", "no *.avi chunk files"


def _zero_frame_session(d):
    (d / "zero.avi").write_bytes(b"")
    return _sheet([("m1", "s1", d / "zero.avi")]), "", "zero.avi", "the file is empty (0 bytes)"


def _duplicate_sessions(d):
    write_avi(d / "a.avi", movie_u8(5, 16, 16))
    return (_sheet([("m1", "s1", d / "a.avi"), ("m1", "s1", d / "a.avi")]), "", "m1/s1",
            "duplicate session name(s) m1/s1")


def _sheet_typo(d):
    return "animal\tsesion\tpath\nm1\ts1\tx.avi\n", "", "sesion", "unknown column(s) 'sesion'"


def _out_of_range_parameter(d):
    write_avi(d / "a.avi", movie_u8(5, 16, 16))
    return (_sheet([("m1", "s1", d / "a.avi")]), "cnmfe:\n  min_corr: 1.5\n", "cnmfe.min_corr",
            "value 1.5 is not allowed")


def _two_rates(d):
    a = write_miniscope_v4(d / "s1", movie_u8(30, 24, 24), np.arange(30) * 50.0)
    b = write_miniscope_v4(d / "s2", movie_u8(30, 24, 24), np.arange(30) * 1000.0 / 30.3)
    return a, b


def _mixed_frame_rates(d):
    a, b = _two_rates(d)
    return (_sheet([("m1", "s1", a), ("m1", "s2", b)]), "", "s2: 30.3 fps",
            "animal m1: sessions differ in frame rate (s1: 20 fps")


def _frame_sizes_too_different(d):
    write_avi(d / "a.avi", movie_u8(5, 32, 32))
    write_avi(d / "b.avi", movie_u8(5, 48, 32))
    return (_sheet([("m1", "s1", d / "a.avi"), ("m1", "s2", d / "b.avi")]), "", "s2: 48x32",
            "session frame sizes differ by 50%")


def _chunk_missing_in_the_middle(d):
    folder = write_miniscope_v4(d / "ms", movie_u8(40, 24, 24), np.arange(40) * 50.0)
    (folder / "2.avi").unlink()
    return _sheet([("m1", "s1", folder)]), "", "missing [2]", "chunk files are not numbered 0..2"


@pytest.mark.parametrize("case", [_missing_file, _empty_folder, _zero_frame_session, _duplicate_sessions,
                                  _sheet_typo, _out_of_range_parameter, _mixed_frame_rates,
                                  _frame_sizes_too_different, _chunk_missing_in_the_middle],
                         ids=lambda f: f.__name__[1:])
def test_stops_before_any_job(tmp_path, case):
    sheet, extra, culprit, message = case(tmp_path)
    work = make_workdir(tmp_path / "work", sheet=sheet, config_extra=extra)
    proc = _run(work, "-n")
    assert proc.returncode != 0
    assert message in proc.stdout and culprit in proc.stdout, proc.stdout[-2000:]
    assert not (work / "results").exists()


# --- cases found by the job that reads the recording --------------------------------------

def _unreadable_video(d):
    (d / "junk.avi").write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    return d / "junk.avi", "junk.avi", "cannot be opened as a video"


def _truncated_tiff(d):
    path = d / "cut.tif"
    tifffile.imwrite(path, movie_u8(20, 32, 32), photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "cut.tif", "truncated"


def _mixed_dtypes(d):
    folder = d / "tifs"
    folder.mkdir()
    tifffile.imwrite(folder / "0.tif", movie_u8(6, 16, 16), photometric="minisblack")
    tifffile.imwrite(folder / "1.tif", movie_u8(6, 16, 16).astype(np.uint16) * 200, photometric="minisblack")
    return folder, "1.tif", "differs from uint8"


def _non_monotonic_timestamps(d):
    t = np.arange(30) * 50.0 + 1000
    t[12], t[13] = t[13], t[12]
    folder = write_miniscope_v4(d / "ms", movie_u8(30, 24, 24), t)
    return folder, "timeStamps.csv", "not monotonic"


def _timestamps_of_another_recording(d):
    folder = write_miniscope_v4(d / "ms", movie_u8(30, 24, 24), np.arange(50) * 50.0)  # 50 rows, 30 frames
    return folder, "timeStamps.csv", "the timestamps belong to another recording"


def _black_session(d):
    tifffile.imwrite(d / "black.tif", np.zeros((30, 24, 24), np.uint8), photometric="minisblack")
    return d / "black.tif", "black.tif", "no usable frame: all 30 recorded frames are unusable: 30 blank frame(s)"


def _nan_frames_under_fail(d):
    frames = movie_u8(30, 24, 24).astype(np.float32)
    frames[[2, 3, 4, 20], 5, 5] = np.nan
    tifffile.imwrite(d / "nan.tif", frames, photometric="minisblack")
    return d / "nan.tif", "nan.tif", "4 frame(s) with NaN or infinite pixels (2-4, 20)"


@pytest.mark.parametrize("case", [_unreadable_video, _truncated_tiff, _mixed_dtypes, _non_monotonic_timestamps,
                                  _timestamps_of_another_recording, _black_session, _nan_frames_under_fail],
                         ids=lambda f: f.__name__[1:])
def test_reading_job_fails_with_culprit_and_leaves_nothing(tmp_path, case):
    """The log and the console name the file at fault, and the sheet row of its session."""
    path, culprit, message = case(tmp_path)
    extra = "downsampling:\n  file_extension: tif\n" if case is _mixed_dtypes else ""
    if case is _nan_frames_under_fail:
        extra = "downsampling:\n  on_damaged_frames: fail\n"
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", path)]), config_extra=extra)
    proc = _run(work, INGEST)
    assert proc.returncode != 0
    log = (work / "logs" / "m1" / "s1" / "ingest.log").read_text()
    assert message in log and culprit in log, log[-2000:]
    source = f"animal m1, session s1: {path} (row 2 of config/sessions.tsv)"
    assert source in log and "califlow ERROR: InputError: " in proc.stdout, proc.stdout[-3000:]
    assert source in proc.stdout, proc.stdout[-3000:]
    assert not (work / INGEST).exists()
    _no_leftovers(work)


def test_error_on_an_intermediate_names_the_source_recordings(tmp_path):
    """motion_correct reads ingest.zarr; its error also names the recording and the sheet row."""
    import zarr

    frames = movie_u8(40, 32, 32).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", frames, photometric="minisblack")
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", tmp_path / "a.tif")]),
                        config_extra="keep_intermediates: true\n")
    assert _run(work, INGEST).returncode == 0
    store = zarr.open_group(str(work / "results/m1/sessions/s1/ingest.zarr"), mode="r+")
    store["movie"][7, 3, 3] = np.nan  # damaged after ingest (by hand, a bad disk...)
    proc = _run(work, "results/m1/sessions/s1/motion.csv")
    assert proc.returncode != 0
    log = (work / "logs/m1/s1/motion_correct.log").read_text()
    assert "ingest.zarr: 1 frame(s) contain NaN or infinite values (0-based): 7" in log, log[-2000:]
    assert f"animal m1, session s1: {tmp_path / 'a.tif'} (row 2 of config/sessions.tsv)" in log


def _index_lies(d):
    import struct

    path = write_avi(d / "lie.avi", movie_u8(30, 24, 24))
    data = bytearray(path.read_bytes())
    at = data.find(b"avih") + 8 + 16  # MainAVIHeader.dwTotalFrames
    data[at:at + 4] = struct.pack("<I", 300)
    path.write_bytes(bytes(data))
    return path, {"n_frames": 30}


def _non_ascii_path(d):
    folder = d / "Maus_ü" / "séance 1"
    folder.mkdir(parents=True)
    return write_avi(folder / "0.avi", movie_u8(20, 24, 24)), {"n_frames": 20}


def _symlinked_folder(d):
    real = write_miniscope_v4(d / "real_ms", movie_u8(30, 24, 24), np.arange(30) * 50.0)
    (d / "link_ms").symlink_to(real, target_is_directory=True)
    return d / "link_ms", {"n_frames": 30, "fps": 20.0, "fps_from": "timestamps"}


def _nan_frames_dropped(d):
    frames = movie_u8(30, 24, 24).astype(np.float32)
    frames[[2, 3, 4, 20], 5, 5] = np.nan
    tifffile.imwrite(d / "nan.tif", frames, photometric="minisblack")
    return d / "nan.tif", {"nonfinite_frames": [2, 3, 4, 20], "interpolated_frames": [2, 3, 4, 20]}


@pytest.mark.parametrize("case", [_index_lies, _non_ascii_path, _symlinked_folder, _nan_frames_dropped],
                         ids=lambda f: f.__name__[1:])
def test_handled_as_documented_at_ingest(tmp_path, case):
    path, expected = case(tmp_path)
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", path)]))
    proc = _run(work, INGEST)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = json.loads((work / INGEST).read_text())
    assert {k: summary[k] for k in expected} == expected
    assert [p for p in (work / "results").rglob("*") if ".tmp-" in p.name] == []


def _without_dac_override(cmd: list[str]) -> list[str] | None:
    """``cmd`` run so that file permissions apply (root: drop CAP_DAC_OVERRIDE), or None when impossible."""
    if os.geteuid() != 0:
        return cmd
    import shutil

    setpriv = shutil.which("setpriv")
    probe = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"],
                           capture_output=True) if setpriv else None
    if probe is None or probe.returncode != 0:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]


def test_unreadable_file_stops_before_any_job(tmp_path):
    path = write_avi(tmp_path / "secret.avi", movie_u8(10, 24, 24))
    path.chmod(0)
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", path)]))
    cmd = _without_dac_override(snakemake_cmd(work, "-n", cores=1))
    if cmd is None:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (root without setpriv)")
    proc = subprocess.run(cmd, cwd=work, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                          env=dict(os.environ, XDG_CACHE_HOME=str(work / ".cache")))
    assert proc.returncode != 0
    out = proc.stdout
    assert "row 2 (animal 'm1', session 's1')" in out, out[-2000:]
    assert "secret.avi: cannot be read (permission denied)" in out, out[-2000:]
    assert not (work / "results").exists()


# --- handled as documented -----------------------------------------------------------------

def test_dropped_frames_are_kept_on_the_time_grid(tmp_path):
    fps = 20.0
    times = gapped_times_ms(40, fps, {9: 2})          # 2 frames lost after recorded frame 9
    folder = write_miniscope_v4(tmp_path / "ms", movie_u8(40, 24, 24), times)
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", folder)]))
    proc = _run(work, INGEST)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = json.loads((work / INGEST).read_text())
    assert summary["n_frames"] == 42 and summary["dropped_frames"] == [10, 11]
    assert summary["interpolated_frames"] == [10, 11]
    assert abs(summary["fps"] - fps) < 0.5


def _sim_tiffs(d, shapes):
    from califlow.simulate import preset, simulate_animal

    animal = simulate_animal(preset("demo", n_sessions=len(shapes), frames_per_session=120,
                                    footprint_source="gaussian"), seed=3)
    rows = []
    for s, (h, w) in enumerate(shapes):
        frames = animal.session_frames(s)
        H, W = frames.shape[1:]
        y0, x0 = (H - h) // 2, (W - w) // 2
        path = d / f"s{s + 1}.tif"
        tifffile.imwrite(path, frames[:, y0:y0 + h, x0:x0 + w], photometric="minisblack")
        rows.append(("m1", f"s{s + 1}", path))
    return _sheet(rows)


def test_sessions_of_different_fov_size(tmp_path):
    """A few pixels of difference are aligned and cropped; a large difference is refused before any job."""
    work = make_workdir(tmp_path / "ok", sheet=_sim_tiffs(tmp_path, [(160, 160), (160, 148)]))
    proc = _run(work, "results/m1/aligned.zarr", extra=("--cores", "2"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    import zarr

    movie = zarr.open_group(str(work / "results/m1/aligned.zarr"), mode="r")["movie"]
    assert movie.shape[0] == 240 and movie.shape[2] <= 148

    bad = tmp_path / "bad"
    bad.mkdir()
    work = make_workdir(tmp_path / "bad_work", sheet=_sim_tiffs(bad, [(160, 160), (160, 90)]))
    proc = _run(work, "results/m1/aligned.zarr", extra=("--cores", "2"))
    assert proc.returncode != 0
    assert "session frame sizes differ by 78%" in proc.stdout and "s2: 160x90" in proc.stdout, proc.stdout[-2000:]
    assert not (work / "results").exists()  # the cohort check stops the run before the first job


def test_mixed_frame_rates_are_resampled_to_target_fps(tmp_path):
    """20 and 30.3 fps sessions with downsampling.target_fps 20: both ingest at 20 fps on one time grid."""
    a, b = _two_rates(tmp_path)
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", a), ("m1", "s2", b)]),
                        config_extra="downsampling:\n  target_fps: 20\n")
    proc = _run(work, INGEST, "results/m1/sessions/s2/ingest.json")
    assert proc.returncode == 0, proc.stdout[-2000:]
    s1, s2 = (json.loads((work / f"results/m1/sessions/{s}/ingest.json").read_text()) for s in ("s1", "s2"))
    assert s1["fps"] == 20.0 and s1["resampled"] is None and s1["n_frames"] == 30
    assert s2["fps"] == pytest.approx(20.0) and s2["resampled"]["from_fps"] == pytest.approx(30.3, rel=1e-3)
    assert s2["n_frames"] == 1 + int(29 * 20.0 / 30.3)  # every 20-fps time within the 30.3-fps span


# --- SIGTERM (a cluster's time limit, scancel) during each rule ----------------------------

def _handles_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _script_jobs(work: Path) -> dict[int, str]:
    """Running Snakemake script jobs in ``work`` whose SIGTERM handler is installed: {pid: script name}."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            ours = len(cmd) >= 2 and Path(cmd[0].decode()).name.startswith("python")
            if not ours or os.readlink(d / "cwd") != str(work):
                continue
            script = Path(cmd[1].decode())
            if ".snakemake/scripts" in str(script) and _handles_sigterm(int(d.name)):
                found[int(d.name)] = script.name.split(".", 1)[1].removesuffix(".py")
        except (OSError, UnicodeDecodeError, StopIteration):
            continue
    return found


def _terminate(pid: int) -> bool:
    """SIGTERM ``pid`` while its handler is surely installed (stopped, checked, signalled, resumed)."""
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            if not _handles_sigterm(pid):
                return False
            os.kill(pid, signal.SIGTERM)
            return True
        finally:
            os.kill(pid, signal.SIGCONT)
    except (OSError, StopIteration):
        return False


def _run_until_terminated(work: Path, killed: set[str]) -> tuple[subprocess.Popen, str | None, str]:
    """Run the workflow; SIGTERM the first job of a script not in ``killed``; return (process, script, output)."""
    env = dict(os.environ, XDG_CACHE_HOME=str(work / ".cache"))
    proc = subprocess.Popen(snakemake_cmd(work, cores=1), cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and victim is None and time.monotonic() < deadline:
        for pid, script in _script_jobs(work).items():
            if script not in killed and _terminate(pid):
                victim = script
                break
        time.sleep(0.01)
    out, _ = proc.communicate(timeout=600)
    return proc, victim, out


def test_sigterm_during_each_rule_removes_partial_output_and_resumes(tmp_path):
    """Each script job is stopped once by SIGTERM as a cluster would: the job exits 143, its log
    says so, no temporary or half-written output remains, and the next run goes on from there."""
    work = make_workdir(tmp_path / "work", sheet=_sim_tiffs(tmp_path, [(96, 96), (96, 96)]))
    killed: set[str] = set()
    for _ in range(30):
        proc, victim, out = _run_until_terminated(work, killed)
        if victim is None:
            assert proc.returncode == 0, out[-3000:]
            break
        killed.add(victim)
        assert proc.returncode != 0 and "non-zero exit status 143" in out, (victim, out[-3000:])
        logs = [p for p in (work / "logs").rglob("*.log") if "terminated by SIGTERM" in p.read_text()]
        assert any(victim.split("_")[0] in p.name for p in logs), (victim, logs)
        left = [p for p in (work / "results").rglob("*") if ".tmp-" in p.name]
        assert left == [], (victim, left)
    expected = {"ingest", "neuron_size", "motion_correct", "enhance", "qc_session", "align_sessions",
                "concatenate", "cnmfe", "export_session", "events_table", "qc_animal", "qc_seeds", "spike_extraction"}
    assert expected <= killed, sorted(expected - killed)
    assert (work / "results" / "m1" / "cnmfe.zarr").exists()


def test_read_only_results_fail_cleanly(tmp_path):
    path = write_avi(tmp_path / "a.avi", movie_u8(20, 24, 24))
    work = make_workdir(tmp_path / "work", sheet=_sheet([("m1", "s1", path)]))
    (work / "results" / "m1" / "sessions" / "s1").mkdir(parents=True)
    for d in ((work / "results" / "m1" / "sessions" / "s1"), (work / "results" / "m1" / "sessions"),
              (work / "results" / "m1"), (work / "results")):
        d.chmod(0o555)
    cmd = _without_dac_override(snakemake_cmd(work, INGEST, cores=1))
    if cmd is None:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (root without setpriv)")
    proc = subprocess.run(cmd, cwd=work, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                          env=dict(os.environ, XDG_CACHE_HOME=str(work / ".cache")))
    for d in work.joinpath("results").rglob("*"):
        d.chmod(0o755)
    assert proc.returncode != 0
    assert "cannot write results/m1/sessions/s1/ingest.zarr: permission denied in results/m1/sessions/s1 " \
           "(a read-only results folder?)" in proc.stdout, proc.stdout[-2000:]
    assert [p.name for p in (work / "results" / "m1" / "sessions" / "s1").iterdir()] == []


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    work = make_workdir(tmp_path / "work", sheet=_sim_tiffs(tmp_path, [(96, 96)]))
    env = dict(os.environ, XDG_CACHE_HOME=str(work / ".cache"))
    first = subprocess.Popen(snakemake_cmd(work, cores=1), cwd=work, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not _script_jobs(work) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before a job started"
        second = run_snakemake(work, cores=1, check=False, timeout=300)
        # Snakemake refuses either at the lock or, when it builds the DAG while the first run's job
        # is still writing, at that job's incomplete-output marker; both leave the first run alone.
        refused = "Directory cannot be locked" in second.stdout or (
            "IncompleteFilesException" in second.stdout and "results/m1/" in second.stdout)
        assert second.returncode != 0 and refused, second.stdout[-2000:]
        assert first.poll() is None, "the second run stopped the first"
    finally:
        first.terminate()
        first.wait(timeout=120)
