"""Helpers for the end-to-end workflow tests: isolated working folders, runs, output hashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_workdir(path: Path, sheet: str | None = None, config_extra: str = "") -> Path:
    """A working folder with the repository's config (and optionally another sheet)."""
    (path / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "config.yaml", path / "config" / "config.yaml")
    if config_extra:
        with open(path / "config" / "config.yaml", "a") as fh:
            fh.write("\n" + config_extra)
    if sheet is None:
        shutil.copy(REPO / "config" / "sessions.tsv", path / "config" / "sessions.tsv")
    else:
        (path / "config" / "sessions.tsv").write_text(sheet)
    return path


def snakemake_cmd(workdir: Path, *args: str, cores: int = 2) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--cores", str(cores), "--show-failed-logs", *args]


def run_snakemake(workdir: Path, *args: str, cores: int = 2, timeout: int = 1200,
                  check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir``; return the completed process (stdout+stderr text)."""
    e = dict(os.environ)
    e.setdefault("XDG_CACHE_HOME", str(workdir / ".cache"))
    if env:
        e.update(env)
    proc = subprocess.run(snakemake_cmd(workdir, *args, cores=cores), cwd=workdir, env=e, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def _hash_zarr(path: Path, h) -> None:
    from califlow.io.store import open_group  # lists stores without Snakemake's timestamp file

    group = open_group(path)

    def walk(g, prefix=""):
        for name in sorted(g.array_keys()):
            arr = np.ascontiguousarray(g[name][...])
            h.update(f"{prefix}{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
        for name in sorted(g.group_keys()):
            walk(g[name], f"{prefix}{name}/")

    walk(group)


def output_hashes(results: Path) -> dict[str, str]:
    """SHA-256 of every scientific output: CSV tables and the arrays of every Zarr store.

    NWB, PNG and isxd files are left out (they embed creation times or renderer details);
    their content derives from the hashed arrays.
    """
    out: dict[str, str] = {}
    for path in sorted(results.rglob("*")):
        rel = str(path.relative_to(results))
        if path.suffix == ".zarr" and path.is_dir():
            h = hashlib.sha256()
            _hash_zarr(path, h)
            out[rel] = h.hexdigest()
        elif path.suffix == ".csv" and ".zarr" not in rel:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
