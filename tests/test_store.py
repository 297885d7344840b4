"""Atomic outputs: complete or absent, never half-written, and no leftovers of killed attempts."""

from __future__ import annotations

import pytest

from califlow.io.store import atomic_output


def test_atomic_output_renames_on_success_and_replaces_the_old_version(tmp_path):
    final = tmp_path / "out" / "cells.csv"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent and tmp.suffix == ".csv" and tmp != final
        tmp.write_text("v1")
    with atomic_output(final) as tmp:
        tmp.write_text("v2")
    assert final.read_text() == "v2"
    assert sorted(p.name for p in final.parent.iterdir()) == ["cells.csv"]


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "aligned.zarr"
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
        raise RuntimeError("killed while writing")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_removes_temporaries_of_a_killed_attempt(tmp_path):
    stale = tmp_path / ".aligned.tmp-123-deadbeef.zarr"  # what SIGKILL leaves behind
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    other = tmp_path / ".cnmfe.tmp-123-deadbeef.zarr"  # another output's temporary: kept
    other.mkdir()
    with atomic_output(tmp_path / "aligned.zarr") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cnmfe.tmp-123-deadbeef.zarr", "aligned.zarr"]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    import subprocess

    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _write_movie(tmp, frames: int, side: int = 128) -> None:
    import numpy as np
    import zarr

    from califlow.io.store import FrameWriter, create_movie

    g = zarr.open_group(str(tmp), mode="w")
    rng = np.random.default_rng(0)
    with FrameWriter(create_movie(g, "movie", (frames, side, side), level=0)) as w:
        for _ in range(0, frames, 50):
            w.write(rng.random((50, side, side), dtype=np.float32))


def test_disk_full_while_writing_leaves_nothing_and_says_how_much(small_disk):
    from califlow.errors import OutOfSpaceError

    final = small_disk / "enhanced.zarr"
    with pytest.raises(OutOfSpaceError) as err, atomic_output(final) as tmp:
        _write_movie(tmp, 400)  # 25 MiB of float32 on a 2 MiB disk
    msg = str(err.value)
    assert str(final) in msg and "bytes) written when the disk filled" in msg and "bytes) are free" in msg
    assert err.value.errno == 28 and isinstance(err.value, OSError)
    assert list(small_disk.iterdir()) == []  # no temporary holds the space that ran out


def test_known_size_is_checked_before_writing(small_disk):
    from califlow.errors import OutOfSpaceError

    final = small_disk / "aligned.zarr"
    started = []
    with pytest.raises(OutOfSpaceError, match=r"not enough space for .*aligned\.zarr: it needs 25\.0 MiB "
                                              r"\(26214400 bytes\) and .* bytes\) are free"), \
            atomic_output(final, needed_bytes=400 * 128 * 128 * 4):
        started.append(True)
    assert not started and list(small_disk.iterdir()) == []
    with atomic_output(final, needed_bytes=1000) as tmp:  # fits: written as usual
        tmp.write_text("ok")
    assert final.read_text() == "ok"


def test_enhance_checks_the_space_of_the_enhanced_movie(small_disk, tmp_path):
    import numpy as np
    import zarr

    from califlow.errors import OutOfSpaceError
    from califlow.io.store import create_movie
    from califlow.motion.session import correct_motion, enhance_session
    from califlow.simulate import preset, simulate_animal

    animal = simulate_animal(preset("default", height=96, width=96, n_sessions=1, frames_per_session=200,
                                    n_neurons=15), seed=2)
    g = zarr.open_group(str(tmp_path / "ingest.zarr"), mode="w")
    create_movie(g, "movie", (200, 96, 96))[...] = animal.session_frames(0).astype(np.float32)
    g.attrs["fps"] = animal.ground_truth.fps
    correct_motion(tmp_path / "ingest.zarr", tmp_path / "motion.csv", tmp_path / "motion.zarr", {})
    with pytest.raises(OutOfSpaceError, match=r"enhanced\.zarr: it needs"):
        enhance_session(tmp_path / "ingest.zarr", tmp_path / "motion.zarr", small_disk / "enhanced.zarr",
                        small_disk / "projections.zarr", {})
    assert list(small_disk.iterdir()) == []
