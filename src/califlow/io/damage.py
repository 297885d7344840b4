"""Damaged video frames: the decoder's own complaints, frame by frame.

OpenCV decodes a damaged FFV1 or MJPEG frame without a word to the caller (FFmpeg only
prints ``slice CRC mismatch`` or ``error count`` on the console), so a corrupted file would
pass as data. :func:`scan_video` decodes the file once more through PyAV, one packet at a
time (slice threads only, so every log line belongs to the packet being decoded), and
captures libav's log while each packet decodes: a packet
whose decoding logs an error, fails, or yields no frame marks its frame damaged. Codecs
that carry state from frame to frame (FFV1 between keyframes, MPEG-4, H.264) spread the
damage, so every frame up to the next keyframe is marked too.

What a decoder cannot see it cannot flag: bytes overwritten inside an uncompressed (raw)
frame carry no checksum. A raw packet of the wrong size is flagged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from califlow.errors import InputError

__all__ = ["DamagedFrame", "scan_video", "damaged_grid_frames", "frame_ranges"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DamagedFrame:
    """One damaged frame: ``file``, its 0-based ``frame`` in that file, and the decoder's ``message``."""

    file: str
    frame: int
    message: str


def _errors(logs) -> str:
    import av.logging

    return "; ".join(m.strip() for lvl, _name, m in logs if lvl <= av.logging.ERROR and m.strip())


def scan_video(path: str | Path) -> tuple[list[DamagedFrame], int]:
    """Decode ``path`` with PyAV and return its damaged frames and the number of frames decoded.

    A frame is damaged when decoding its packet logs an error, raises, or yields nothing;
    later frames that depend on it (up to the next keyframe) are damaged too.
    """
    import av
    import av.logging

    path = Path(path)
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # restored below: no process-wide change
    damaged: list[DamagedFrame] = []
    n, spreading = 0, ""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"  # not FRAME: log lines must belong to the packet being decoded
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                with av.logging.Capture(local=False) as logs:
                    try:
                        frames = packet.decode()
                        failure = ""
                    except av.error.FFmpegError as exc:
                        frames, failure = [], f"decoding failed: {exc}"
                message = failure or _errors(logs) or ("" if frames else "the packet decoded to no frame")
                if packet.is_keyframe:
                    spreading = ""
                if message:
                    damaged.append(DamagedFrame(str(path), n, message))
                    spreading = f"decoded from damaged frame {n} (no keyframe since)"
                elif spreading:
                    damaged.append(DamagedFrame(str(path), n, spreading))
                n += max(len(frames), 1 if message else 0)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: cannot be scanned for damaged frames ({exc})") from exc
    finally:
        av.logging.set_level(level)
    return damaged, n


def damaged_grid_frames(files: Sequence[Path], grid_positions: np.ndarray | None
                        ) -> tuple[list[DamagedFrame], np.ndarray]:
    """Scan every video file of a movie; return the damaged frames and their grid indices.

    Files are placed one after the other by the frames the scan decodes in each;
    ``grid_positions`` maps recorded frames to the acquisition grid (identity when None).
    Files that are not videos are skipped.
    """
    from califlow.io.readers import VIDEO_EXTENSIONS

    found: list[DamagedFrame] = []
    recorded: list[int] = []
    offset = 0
    for f in files:
        if Path(f).suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        frames, n = scan_video(f)
        found += frames
        recorded += [offset + d.frame for d in frames]
        offset += n
    idx = np.asarray(recorded, np.int64)
    if grid_positions is not None and idx.size:
        idx = np.asarray(grid_positions, np.int64)[idx]
    return found, idx


def frame_ranges(frames: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    f = sorted(int(x) for x in frames)
    out, i = [], 0
    while i < len(f):
        j = i
        while j + 1 < len(f) and f[j + 1] == f[j] + 1:
            j += 1
        out.append(str(f[i]) if i == j else f"{f[i]}-{f[j]}")
        i = j + 1
    return ", ".join(out)
