"""Chunked Zarr 3 stores: creation, provenance attributes and atomic finalisation.

Every califlow store is written under a temporary sibling name and renamed into place only
when complete (:func:`atomic_output`), so an interrupted job never leaves a half-written
store behind under the final name. Movies are (T, H, W) float32 arrays chunked about
(100, 64, 64) with blosc-zstd and bit-shuffle (fast in both frame and patch order).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

from califlow.errors import OutOfSpaceError, OutputPermissionError
from califlow.job import raise_if_terminated

__all__ = [
    "MOVIE_CHUNKS",
    "bytes_in",
    "free_bytes",
    "size_text",
    "FrameWriter",
    "compressor",
    "atomic_output",
    "check_free_space",
    "create_movie",
    "create_image",
    "provenance",
    "set_provenance",
    "open_group",
    "ResultsStore",
    "SNAKEMAKE_TIMESTAMP",
    "to_jsonable",
]

MOVIE_CHUNKS = (100, 64, 64)


def compressor(level: int = 3) -> BloscCodec:
    """The codec of every califlow array: blosc zstd (level 3 by default) with bit-shuffle.

    Level 1 compresses noise-like float32 movies as well (1.27x vs 1.28x) at about half the
    CPU time; temporary intermediates use it.
    """
    return BloscCodec(cname="zstd", clevel=int(level), shuffle="bitshuffle")


def _tmp_name(path: Path) -> Path:
    # keep the suffix last so format checks by extension (.nwb, .zarr, .isxd) still hold
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _drain_zarr_io(timeout_s: float = 5.0) -> None:
    """Wait until zarr's IO event loop finishes the tasks that an interrupted call left running.

    A zarr write interrupted in the calling thread (SIGTERM, out of space) goes on in zarr's
    IO thread and may recreate chunk files after the temporary output was removed. zarr has
    no public hook for this; without its loop (other versions) this does nothing.
    """
    try:
        from zarr.core import sync as zarr_sync

        io_loop = zarr_sync.loop[0]
    except (ImportError, AttributeError, IndexError):
        return
    if io_loop is None or not io_loop.is_running():
        return

    async def _others_done() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    with contextlib.suppress(Exception):  # best effort; the removal below runs regardless
        asyncio.run_coroutine_threadsafe(_others_done(), io_loop).result(timeout_s + 1.0)


def _remove(path: Path, settle_s: float = 0.0) -> None:
    """Remove a file or folder; with ``settle_s``, again while writes still in flight recreate it."""
    deadline = time.monotonic() + settle_s
    while True:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def size_text(n: float) -> str:
    """Bytes as B, KiB, MiB or GiB (``size_text(3 * 2**30) == '3.0 GiB'``)."""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def bytes_in(path: str | os.PathLike) -> int:
    """Bytes of the files in ``path`` (a file or a folder, recursively); 0 when it does not exist."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes free on the disk of ``folder``, or of its nearest existing parent."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return int(shutil.disk_usage(folder).free)


def is_out_of_space(exc: BaseException) -> bool:
    """True for an out-of-space or over-quota error (errno, or HDF5's wording of it)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def check_free_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Raise :class:`~califlow.errors.OutOfSpaceError` before writing ``path`` when it cannot fit.

    ``needed_bytes`` is the size the output will take (at least); the free space of the disk
    that holds ``path``'s folder must cover it.
    """
    final = Path(path)
    free = free_bytes(final.parent)
    if needed_bytes > free:
        raise OutOfSpaceError(errno.ENOSPC, f"not enough space for {final}: it needs {size_text(needed_bytes)} "
                              f"({needed_bytes} bytes) and {size_text(free)} ({free} bytes) are free on its "
                              "disk; free space or point the results elsewhere")


def _out_of_space(final: Path, written: int, needed: int | None, exc: BaseException) -> Exception:
    free = free_bytes(final.parent)
    need = (f"it needed {size_text(needed)} ({needed} bytes)" if needed else
            f"it needed more than the {size_text(written)} ({written} bytes) written when the disk filled")
    return OutOfSpaceError(errno.ENOSPC, f"the disk filled while writing {final}: {need}, and "
                           f"{size_text(free)} ({free} bytes) are free once its partial output is removed "
                           f"({type(exc).__name__}: {exc}); free space or point the results elsewhere")


def _writing_fails(exc: BaseException, tmp: Path) -> bool:
    """True for a PermissionError on the temporary output (or inside it, or on its folder)."""
    failed = getattr(exc, "filename", None)
    if not isinstance(exc, PermissionError) or isinstance(exc, OutputPermissionError) or failed is None:
        return False
    failed = Path(os.fsdecode(failed)).absolute()
    tmp = tmp.absolute()
    return failed == tmp.parent or failed == tmp or tmp in failed.parents


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file or directory is removed and ``path`` is left as it
    was (absent or the previous complete version), so no half-written output remains.
    Temporaries of ``path`` left by a killed earlier attempt are removed first (one job
    writes a given output at a time, so they cannot belong to a live writer).

    Parameters
    ----------
    path : path
        The final output (file or folder).
    needed_bytes : int, optional
        Size the output will take, where it is known in advance: the free space is checked
        before anything is written (:func:`check_free_space`).

    Raises
    ------
    califlow.errors.OutOfSpaceError
        Not enough free space (checked up front), or the disk filled while writing; the
        message names the output, the bytes needed (or written) and the bytes free.

    Examples
    --------
    >>> with atomic_output("results/a/aligned.zarr") as tmp:   # doctest: +SKIP
    ...     write_store(tmp)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{glob.escape(final.stem)}.tmp-*{glob.escape(final.suffix)}"):
        _remove(stale)
    if needed_bytes:
        check_free_space(final, int(needed_bytes))
    tmp = _tmp_name(final)
    try:
        yield tmp
        raise_if_terminated()  # a SIGTERM whose exception a library swallowed: do not commit
    except BaseException as exc:
        _drain_zarr_io()
        if _writing_fails(exc, tmp):
            _remove(tmp)
            raise OutputPermissionError(errno.EACCES, f"cannot write {final}: permission denied in {final.parent} "
                                        f"(a read-only results folder?); make it writable for this user or point "
                                        f"the results elsewhere ({exc})") from exc
        if not is_out_of_space(exc) or isinstance(exc, OutOfSpaceError):
            _remove(tmp)
            raise
        written = bytes_in(tmp)
        _remove(tmp, settle_s=0.5)  # writer threads still in flight may recreate chunk folders
        raise _out_of_space(final, written, needed_bytes, exc) from exc
    if not tmp.exists():
        raise FileNotFoundError(f"atomic_output: nothing was written to the temporary {tmp} for {final}")
    if final.exists() or final.is_symlink():
        old = _tmp_name(final)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


#: The file Snakemake writes into every ``directory()`` output, a store's root included, to
#: carry the output's modification time (snakemake.io ``_IOFile.touch``). It cannot be
#: avoided while stores are ``directory()`` outputs, and it is not part of the Zarr hierarchy.
SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"


class ResultsStore(LocalStore):
    """A local Zarr store whose listings leave out Snakemake's ``.snakemake_timestamp``.

    zarr lists a group's folder to find its members (``keys()``, ``members()``, ``len()``,
    ``tree()``) and warns ``ZarrUserWarning: Object at .snakemake_timestamp is not
    recognized as a component of a Zarr hierarchy`` for the foreign file; hidden from the
    listings, it is neither warned about nor counted. Every other key is listed as usual.
    """

    @staticmethod
    def _ours(key: str) -> bool:
        return key.rsplit("/", 1)[-1] != SNAKEMAKE_TIMESTAMP

    async def list(self) -> AsyncIterator[str]:
        async for key in super().list():
            if self._ours(key):
                yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in super().list_prefix(prefix):
            if self._ours(key):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        async for key in super().list_dir(prefix):
            if self._ours(key):
                yield key


def open_group(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    """Open a califlow Zarr group, with a clear error when it is missing.

    The group is opened on a :class:`ResultsStore`, so the ``.snakemake_timestamp`` file
    that Snakemake puts into every store made by a workflow rule is not taken for a member.
    """
    p = Path(path)
    if mode == "r" and not (p / "zarr.json").exists():
        raise FileNotFoundError(f"{p} is not a califlow Zarr store (no zarr.json); was the step that makes it run?")
    return zarr.open_group(store=ResultsStore(p, read_only=mode == "r"), mode=mode)


def create_movie(group: zarr.Group, name: str, shape: tuple[int, int, int], stored_dtype="float32",
                 chunks: tuple[int, int, int] | None = None, level: int = 3) -> zarr.Array:
    """Create a (T, H, W) movie array of ``stored_dtype`` with the califlow chunking and codec (zstd ``level``)."""
    t, h, w = (int(s) for s in shape)
    ct, ch, cw = chunks or MOVIE_CHUNKS
    chunks = (max(1, min(ct, max(t, 1))), max(1, min(ch, h)), max(1, min(cw, w)))
    return group.create_array(name, shape=(t, h, w), chunks=chunks, dtype=stored_dtype,
                              compressors=compressor(level), fill_value=0)


class FrameWriter:
    """Append frames, in order, to a (T, H, W) Zarr array one whole time-chunk at a time.

    Frames are copied into a (chunk_t, H, W) float32 buffer; a full buffer is compressed and
    written by one background thread while the next one fills (double buffering), so the
    producer overlaps compression and memory is two time-chunks whatever the movie length.
    Each chunk is written exactly once (safe for one writer per chunk). The array grows when
    more frames arrive than it holds; :meth:`close` trims it to the frames written. Errors of
    the writer thread are raised in the caller at the next call. ``encode``, when given, maps
    each float32 block to the stored values in the writer thread
    (:meth:`califlow.io.encoding.MovieEncoding.encode`).

    Examples
    --------
    >>> with FrameWriter(create_movie(group, "movie", (T, H, W))) as w:   # doctest: +SKIP
    ...     for block in blocks:
    ...         w.write(block)
    """

    def __init__(self, array: zarr.Array, chunk_t: int | None = None, encode=None):
        self.array = array
        self.encode = encode
        self.chunk_t = int(chunk_t or array.chunks[0])
        shape = (self.chunk_t, *array.shape[1:])
        self._buffers = [np.empty(shape, np.float32), np.empty(shape, np.float32)]
        self._fill = 0  # frames in the current buffer
        self.pos = 0  # frames handed to the thread
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="califlow-writer")
        self._future: Future | None = None

    def _store(self, start: int, data: np.ndarray) -> None:
        end = start + data.shape[0]
        if end > self.array.shape[0]:
            self.array.resize((end, *self.array.shape[1:]))
        self.array[start:end] = data if self.encode is None else self.encode(data)

    def _wait(self) -> None:
        if self._future is not None:
            future, self._future = self._future, None
            future.result()  # re-raises an error of the writer thread

    def _submit(self) -> None:
        self._wait()  # the other buffer is free again once its write has finished
        buf = self._buffers[0]
        self._future = self._pool.submit(self._store, self.pos, buf[:self._fill])
        self.pos += self._fill
        self._buffers.reverse()
        self._fill = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``frames`` (n, H, W) after those already written."""
        i = 0
        while i < frames.shape[0]:
            take = min(self.chunk_t - self._fill, frames.shape[0] - i)
            self._buffers[0][self._fill:self._fill + take] = frames[i:i + take]
            self._fill += take
            i += take
            if self._fill == self.chunk_t:
                self._submit()

    def close(self) -> int:
        """Write what is left, wait for the thread, trim the array; return the frames written."""
        if self._fill:
            self._submit()
        self._wait()
        self.stop()
        if self.array.shape[0] != self.pos:
            self.array.resize((self.pos, *self.array.shape[1:]))
        return self.pos

    def stop(self) -> None:
        """End the writer thread (a write in progress finishes first)."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.stop()


def create_image(group: zarr.Group, name: str, data: np.ndarray) -> zarr.Array:
    """Write a small array (an image or a stack of images) in one chunk."""
    data = np.asarray(data)
    arr = group.create_array(name, shape=data.shape, chunks=data.shape or None, dtype=data.dtype,
                             compressors=compressor(), fill_value=0)
    arr[...] = data
    return arr


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and infinities into JSON-safe values."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        if np.isnan(value):
            return "NaN"
        if np.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def provenance(params: Mapping | None = None, inputs: Any = None, **extra) -> dict:
    """Attributes every store carries: califlow version, resolved parameters, inputs."""
    from califlow import __version__

    out = {"califlow_version": __version__}
    if params is not None:
        out["params"] = to_jsonable(params)
    if inputs is not None:
        out["inputs"] = to_jsonable(inputs)
    out.update(to_jsonable(extra))
    json.dumps(out)  # fail early if something is still not serialisable
    return out


def set_provenance(group: zarr.Group, params: Mapping | None = None, inputs: Any = None, **extra) -> None:
    """Write :func:`provenance` attributes into ``group``."""
    group.attrs.update(provenance(params, inputs, **extra))
