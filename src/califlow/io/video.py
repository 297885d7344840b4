"""Video files (AVI, MP4, MKV...) through OpenCV's FFmpeg backend, single-channel.

Gray 8-bit (``Y800``/``GREY``, FFV1 or raw) and 16-bit (``gray16le``) streams are decoded
at native depth with ``CAP_PROP_CONVERT_RGB=0``, so 16-bit data stay uint16. Colour or YUV
streams (MJPEG, MPEG-4, H.264, palettised DIB) are decoded to BGR and converted to gray
(``0.299 R + 0.587 G + 0.114 B``), as MATLAB's ``rgb2gray`` does; gray content encoded as
colour therefore comes back with its gray values.

The frame count is what decodes, not the header's claim. A truncated AVI (its RIFF size
says more bytes than the file holds) raises :class:`~califlow.errors.InputError` naming the
file and the last frame that decoded.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import cv2
import numpy as np

from califlow.errors import InputError
from califlow.io.sources import FrameReader, FrameStream

__all__ = ["VideoReader", "avi_truncation"]

log = logging.getLogger(__name__)

# FFmpeg pixel formats, as OpenCV reports them in CAP_PROP_CODEC_PIXEL_FORMAT (a FourCC)
_GRAY8 = {b"Y800", b"GREY", b"Y8  ", b"Y8\x00\x00"}
_GRAY16 = {b"Y1\x00\x10", b"Y16 "}


def _fourcc(value: float) -> bytes:
    """A FourCC property as 4 bytes (OpenCV returns -1 when it does not know it)."""
    v = int(value)
    return v.to_bytes(4, "little", signed=False) if 0 <= v < 2**32 else b"\0\0\0\0"


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's warning about turning BGR conversion off (restored afterwards)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def avi_truncation(path: Path) -> str | None:
    """Why an AVI file is truncated (its RIFF chunks need more bytes than it has), or None.

    Walks the top-level RIFF chunks (``RIFF AVI `` then OpenDML ``RIFF AVIX``); a file whose
    last chunk runs past its end was cut short (interrupted recording or partial copy).
    Returns None for intact files and for files that are not RIFF.
    """
    size = path.stat().st_size
    pos = 0
    with open(path, "rb") as fh:
        while pos + 8 <= size:
            fh.seek(pos)
            head = fh.read(8)
            if head[:4] not in (b"RIFF", b"RIFX"):
                return None  # not RIFF, or trailing bytes after the last RIFF chunk
            length = int.from_bytes(head[4:8], "little")
            end = pos + 8 + length
            if end > size:
                return f"its RIFF chunk at byte {pos} declares {end} bytes but the file has {size}"
            pos = end + (length & 1)
    return None


def _open_capture(path: Path, convert_rgb: bool) -> cv2.VideoCapture:
    with _quiet_opencv():
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, int(convert_rgb)])
    if not cap.isOpened():
        cut = avi_truncation(path) if path.suffix.lower() == ".avi" else None
        if cut:
            raise InputError(f"{path}: cannot be opened as a video: the file is truncated ({cut}), no frame "
                             f"can be placed in time; re-copy or repair it")
        raise InputError(f"{path}: cannot be opened as a video (unsupported container or codec, or a "
                         f"corrupt/incomplete file)")
    return cap


class _VideoStream(FrameStream):
    def __init__(self, reader: VideoReader, start: int):
        self.reader = reader
        self.cap = _open_capture(reader.path, reader.mode == "bgr")
        self.index = int(start)
        if start:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, float(start))
        self._bgr = None
        self._pending: np.ndarray | None = None  # frame read ahead past a damaged packet

    def _decode(self, dst: np.ndarray) -> bool:
        """Decode the next frame into ``dst`` (H, W); False at the end or on a failed packet."""
        r, cap = self.reader, self.cap
        if r.mode == "native":
            ok, frame = cap.read(dst)
            if not ok:
                return False
            if frame.shape != dst.shape or frame.dtype != dst.dtype:
                raise InputError(f"{r.path}: frame {self.index} is {frame.shape} {frame.dtype}, "
                                 f"expected {dst.shape} {dst.dtype} like the first frame")
            if frame.ctypes.data != dst.ctypes.data:
                dst[...] = frame
            return True
        ok, self._bgr = cap.read(self._bgr)
        if not ok:
            return False
        frame = self._bgr
        if frame.shape[:2] != dst.shape:
            raise InputError(f"{r.path}: frame {self.index} is {frame.shape[:2]}, expected {dst.shape}")
        if frame.ndim == 2:
            dst[...] = frame
        else:
            cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY, dst=dst)
        return True

    def _past_damaged_packet(self, like: np.ndarray) -> bool:
        """After a failed read inside the file: True when frames follow (one packet did not decode).

        OpenCV skips such a packet and goes on; its frame keeps its place as a zero frame so
        later frames are not shifted in time (the damage scan, :mod:`califlow.io.damage`,
        flags it, and ingest interpolates it).
        """
        claimed = self.reader.n_claimed
        if claimed is None or self.index >= claimed - 1:
            return False
        ahead = np.empty_like(like)
        if not self._decode(ahead):
            return False
        self._pending = ahead
        log.warning("%s: frame %d did not decode (damaged packet); kept as a placeholder", self.reader.path,
                    self.index)
        return True

    def read_into(self, out: np.ndarray) -> int:
        r = self.reader
        k = 0
        n = out.shape[0]
        while k < n:
            if self._pending is not None:
                out[k], self._pending = self._pending, None
            elif not self._decode(out[k]):
                if not self._past_damaged_packet(out[k]):
                    break
                out[k] = 0
            k += 1
            self.index += 1
        if k < n and r.truncation is not None:
            raise InputError(f"{r.path}: the file is truncated ({r.truncation}); decoding stopped after "
                             f"frame {self.index - 1} (header claims {r.n_claimed} frames). Re-copy or "
                             f"repair the file; frames after the break cannot be placed in time")
        return k

    def close(self) -> None:
        self.cap.release()


class VideoReader(FrameReader):
    """One video file, decoded to single-channel frames.

    Parameters
    ----------
    path : path-like
        AVI / MP4 / MKV / MOV file readable by FFmpeg.
    trust_container_fps : bool
        False for Miniscope AVIs, whose header always says 60 fps.
    """

    kind = "video"

    def __init__(self, path, *, trust_container_fps: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: video file not found")
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.path}: the file is empty (0 bytes)")
        cap = _open_capture(self.path, convert_rgb=False)
        try:
            pix = _fourcc(cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT))
            self.codec = _fourcc(cap.get(cv2.CAP_PROP_FOURCC)).decode("latin-1").strip("\x00 ")
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            if pix in _GRAY8 or pix in _GRAY16:
                self.mode = "native"
                ok, frame = cap.read()
            else:
                self.mode = "bgr"
        finally:
            cap.release()
        if self.mode == "bgr":
            cap = _open_capture(self.path, convert_rgb=True)
            try:
                ok, frame = cap.read()
            finally:
                cap.release()
        if not ok or frame is None:
            raise InputError(f"{self.path}: no frame could be decoded (zero-frame or corrupt video; "
                             f"codec {self.codec!r})")
        if frame.dtype not in (np.uint8, np.uint16):
            raise InputError(f"{self.path}: unsupported pixel type {frame.dtype}")
        self.height, self.width = frame.shape[:2]
        self.native_dtype = np.dtype(frame.dtype)
        self.dtype = self.native_dtype
        self.pixel_format = pix.decode("latin-1")
        self.n_claimed = count if count > 0 else None
        self.container_fps = fps if (trust_container_fps and fps > 0) else None
        self.header_fps = fps if fps > 0 else None
        self.truncation = avi_truncation(self.path) if self.path.suffix.lower() == ".avi" else None

    def stream(self, start: int = 0) -> FrameStream:
        return _VideoStream(self, start)

    def describe(self) -> dict:
        out = super().describe()
        out.update(codec=self.codec, pixel_format=self.pixel_format, decode=self.mode,
                   header_fps=self.header_fps, truncated=self.truncation)
        return out
