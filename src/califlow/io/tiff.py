"""Multi-page TIFF movies (one file, or one chunk of a folder) through tifffile, streamed.

Contiguous uncompressed stacks (``tifffile.imwrite`` of a (T, H, W) array, ImageJ
hyperstacks, Inscopix TIFF exports) are memory-mapped and sliced; other files (compressed or
scattered pages) are decoded page range by page range. Neither path loads the whole file.
Frames of dtypes other than uint8/uint16/float32 are returned as float32; RGB pages are
converted to gray (0.299 R + 0.587 G + 0.114 B).

A truncated file (pages or pixel data past its end, or fewer pages than its ImageJ
header lists) raises :class:`~califlow.errors.InputError` naming the first missing frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile

from califlow.errors import InputError
from califlow.io.sources import FrameReader, FrameStream, output_dtype

__all__ = ["TiffReader"]


class _TiffLogCatcher(logging.Handler):
    """Collects tifffile's complaints about broken page chains while a file is parsed."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _to_gray(frames: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(n, H, W[, C]) pages as (n, H, W) ``dtype`` (RGB(A) pages become luminance)."""
    if frames.ndim == 4:
        rgb = frames[..., :3].astype(np.float32)
        frames = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        if np.dtype(dtype).kind in "ui":
            frames = np.rint(frames)
    return frames.astype(dtype, copy=False)


class _TiffStream(FrameStream):
    def __init__(self, reader: TiffReader, start: int):
        self.reader = reader
        self.pos = int(start)
        self.tif = None if reader.contiguous else tifffile.TiffFile(reader.path)
        self.mm = None
        if reader.contiguous:
            self.mm = np.memmap(reader.path, dtype=reader.file_dtype, mode="r", offset=reader.dataoffset,
                                shape=(reader.n_claimed, *reader.page_shape))

    def read_into(self, out: np.ndarray) -> int:
        r = self.reader
        stop = min(self.pos + out.shape[0], r.n_claimed)
        k = max(stop - self.pos, 0)
        if k == 0:
            return 0
        if self.mm is not None:
            out[:k] = _to_gray(np.asarray(self.mm[self.pos:stop]), r.dtype)
        else:
            try:
                data = self.tif.asarray(key=range(self.pos, stop))
            except Exception as exc:  # tifffile raises ValueError/OSError/... on damaged pages
                raise InputError(f"{r.path}: TIFF pages {self.pos}..{stop - 1} cannot be decoded ({exc}); "
                                 f"the file is damaged") from exc
            data = data.reshape(k, *data.shape[-len(r.page_shape):])
            if data.shape[1:] != r.page_shape:
                raise InputError(f"{r.path}: a page in frames {self.pos}..{stop - 1} is {data.shape[1:]}, "
                                 f"expected {r.page_shape}")
            out[:k] = _to_gray(data, r.dtype)
        self.pos = stop
        return k

    def close(self) -> None:
        if self.tif is not None:
            self.tif.close()
        self.mm = None


class TiffReader(FrameReader):
    """One (multi-page) TIFF file as a movie; frames are pages (or the ImageJ hyperstack's)."""

    kind = "tiff"

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: TIFF file not found")
        size = self.path.stat().st_size
        if size == 0:
            raise InputError(f"{self.path}: the file is empty (0 bytes)")
        catcher = _TiffLogCatcher()
        tlog = logging.getLogger("tifffile")
        tlog.addHandler(catcher)
        try:
            with tifffile.TiffFile(self.path) as tif:
                self._inspect(tif, size, catcher)
        except tifffile.TiffFileError as exc:
            raise InputError(f"{self.path}: not a readable TIFF ({exc})") from exc
        finally:
            tlog.removeHandler(catcher)
        self.dtype = output_dtype(self.native_dtype)

    def _inspect(self, tif: tifffile.TiffFile, size: int, catcher: _TiffLogCatcher) -> None:
        pages = tif.pages
        n_pages = len(pages)
        if n_pages == 0:
            raise InputError(f"{self.path}: the TIFF has no pages (zero frames)")
        first = pages.first
        page_shape = tuple(first.shape)
        if len(page_shape) == 3 and page_shape[-1] in (3, 4):
            frame_shape = page_shape[:2]
        elif len(page_shape) == 2:
            frame_shape = page_shape
        else:
            raise InputError(f"{self.path}: TIFF pages of shape {page_shape} are not 2-D images")
        self.page_shape = page_shape
        self.height, self.width = (int(s) for s in frame_shape)
        self.native_dtype = np.dtype(first.dtype)
        self.file_dtype = self.native_dtype.newbyteorder(tif.byteorder)
        series = tif.series[0] if tif.series else None
        frame_bytes = int(np.prod(page_shape)) * self.native_dtype.itemsize
        self.contiguous = False
        self.dataoffset = None
        n = n_pages
        if (series is not None and series.dataoffset is not None
                and tuple(series.shape[-len(page_shape):]) == page_shape):
            n_series = int(np.prod(series.shape[:-len(page_shape)])) if len(series.shape) > len(page_shape) else 1
            if n_series >= n_pages:  # ImageJ hyperstacks > 4 GB hold one IFD but many frames
                self.contiguous = True
                self.dataoffset = int(series.dataoffset)
                n = n_series
        declared = None
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        if shaped.get("fps"):
            self.container_fps = float(shaped["fps"])
        if tif.is_imagej and tif.imagej_metadata:
            declared = int(tif.imagej_metadata.get("images", 0)) or None
            interval = tif.imagej_metadata.get("finterval")
            fps = tif.imagej_metadata.get("fps")
            self.container_fps = (1.0 / float(interval) if interval else float(fps) if fps else None)
        broken = [m for m in catcher.messages if "invalid" in m or "corrupt" in m]
        if self.contiguous:
            complete = (size - self.dataoffset) // frame_bytes
            if complete < n:
                raise InputError(f"{self.path}: the TIFF is truncated: frame {complete} (0-based) and later are "
                                 f"missing ({n} frames declared, file is {size} bytes)")
        else:
            last = pages[n_pages - 1]
            offsets, counts = last.dataoffsets, last.databytecounts
            end = max((o + c for o, c in zip(offsets, counts)), default=0)
            if end > size:
                raise InputError(f"{self.path}: the TIFF is truncated: frame {n_pages - 1} (0-based) runs past "
                                 f"the end of the file ({end} > {size} bytes)")
            if broken:
                raise InputError(f"{self.path}: the TIFF is truncated or damaged after frame {n_pages - 1} "
                                 f"(0-based): {broken[0]}")
        if declared is not None and declared > n:
            raise InputError(f"{self.path}: the TIFF is truncated: its ImageJ header lists {declared} frames but "
                             f"only {n} are present (frame {n} is the first missing)")
        self.n_claimed = int(n)

    def stream(self, start: int = 0) -> FrameStream:
        return _TiffStream(self, start)

    def describe(self) -> dict:
        out = super().describe()
        out.update(contiguous=self.contiguous)
        return out
