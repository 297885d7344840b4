"""Writers of small recordings in every input format, shared by the io and ingest tests (no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest


def movie_u8(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(T, H, W) uint8 frames whose content identifies the frame (frame t has a t-dependent ramp)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(h, w), dtype=np.int64)
    ramp = (np.arange(t)[:, None, None] * 7 + np.arange(w)[None, None, :]) % 50
    return ((base[None] + ramp) % 256).astype(np.uint8)


def write_avi(path: Path, frames: np.ndarray, fourcc: str = "FFV1", fps: float = 60.0) -> Path:
    """8-bit gray AVI written the way the Miniscope DAQ software does (cv2, isColor=False)."""
    h, w = frames.shape[1:3]
    color = frames.ndim == 4
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), isColor=color)
    assert writer.isOpened(), f"cannot write {fourcc} with this OpenCV"
    for f in frames:
        writer.write(f)
    writer.release()
    return Path(path)


def write_avi16(path: Path, frames: np.ndarray, fps: float = 20.0) -> Path:
    """16-bit gray (gray16le) FFV1 AVI through PyAV (cv2 cannot write 16-bit video)."""
    import av

    h, w = frames.shape[1:]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "gray16le"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="gray16le")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_miniscope_v4(folder: Path, frames: np.ndarray, times_ms: np.ndarray, *, frames_per_file: int = 10,
                       daq_frames: np.ndarray | None = None, fourcc: str = "FFV1") -> Path:
    """A V4 device folder: 0.avi.. (60 fps header), metaData.json, timeStamps.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(range(0, frames.shape[0], frames_per_file)):
        write_avi(folder / f"{i}.avi", frames[a:a + frames_per_file], fourcc=fourcc, fps=60.0)
    meta = {"deviceName": "Miniscope", "deviceType": "Miniscope_V4_BNO", "framesPerFile": frames_per_file,
            "compression": fourcc, "frameRate": "30FPS"}
    (folder / "metaData.json").write_text(json.dumps(meta))
    header = "Frame Number,Time Stamp (ms),Buffer Index" + (",DAQ Frame Number" if daq_frames is not None else "")
    rows = [header]
    for i, t in enumerate(times_ms):
        row = f"{i},{int(round(t))},0" + (f",{int(daq_frames[i])}" if daq_frames is not None else "")
        rows.append(row)
    (folder / "timeStamps.csv").write_text("\n".join(rows) + "\n")
    return folder


def gapped_times_ms(n: int, fps: float, gaps: dict[int, int], jitter_ms: float = 2.0, seed: int = 1) -> np.ndarray:
    """Timestamps (ms) of n recorded frames at ``fps`` with ``gaps[i]`` frames missing after frame i."""
    rng = np.random.default_rng(seed)
    step = np.ones(n - 1)
    for i, m in gaps.items():
        step[i] += m
    t = np.concatenate([[0.0], np.cumsum(step)]) * 1000.0 / fps
    return 12345.0 + t + rng.uniform(-jitter_ms, jitter_ms, n)


def test_a_full_disk_under_the_log_does_not_mask_the_jobs_error(capsys):
    """/dev/full fails every write with ENOSPC, as a log on a full disk does."""
    from califlow.progress import script_logging

    with pytest.raises(ValueError, match="the real cause"), script_logging("/dev/full") as log:
        log.info("a line the disk cannot take")
        raise ValueError("the real cause")
    assert "califlow ERROR: ValueError: the real cause" in capsys.readouterr().err
