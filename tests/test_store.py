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
