"""Damaged AVIs: frames that decode wrong against frames califlow flags, and what the scan costs.

Run::

    python benchmarks/bench_damaged_frames.py

For FFV1 and MJPEG AVIs (200 frames of 240 x 320, written with OpenCV), 16, 64 or 200 bytes are
overwritten in the middle of one frame's packet. "wrong" are the frames whose OpenCV decode
differs from the clean file's; "flagged" are the ``damaged_frames`` of ``ingest.json``
(:mod:`califlow.io.damage`). Then the damage scan and the plain OpenCV decode are timed,
interleaved, on a 500-frame 608 x 608 FFV1 file.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _video(path: Path, codec: str, frames: np.ndarray) -> Path:
    color = codec == "mjpeg"
    h, w = frames.shape[1:]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*{"ffv1": "FFV1", "mjpeg": "MJPG"}[codec]), 20, (w, h),
                         isColor=color)
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if color else f)
    vw.release()
    return path


def _overwrite(path: Path, frame: int, n: int) -> None:
    data = bytearray(path.read_bytes())
    pos, k = data.find(b"movi") + 4, 0
    while True:  # walk the movi chunks to the frame's packet
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if k == frame:
            start = pos + 8 + size // 2 - n // 2
            data[start:start + n] = b"\x55" * n
            path.write_bytes(bytes(data))
            return
        pos, k = pos + 8 + size + (size & 1), k + 1


def _decode(path: Path, shape) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    out = []
    for _ in range(int(cap.get(cv2.CAP_PROP_FRAME_COUNT))):
        ok, f = cap.read()
        out.append(np.full(shape, -999) if not ok else cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if f.ndim == 3 else f)
    return np.stack(out).astype(np.int16)


def _frames(n: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:h, :w]
    base = 80 + 40 * np.sin(yy / 17.0) * np.cos(xx / 19.0)
    return np.stack([np.clip(base + rng.normal(0, 4, base.shape), 0, 255) for _ in range(n)]).astype(np.uint8)


def main() -> None:
    from califlow.io.damage import frame_ranges, scan_video
    from califlow.io.ingest import ingest
    from califlow.io.video import VideoReader

    print("command:", " ".join(sys.argv))
    d = Path(tempfile.mkdtemp(prefix="bench_damage_"))
    frames = _frames(200, 240, 320)
    print("| codec | bytes | frame hit | frames wrong | frames flagged | missed | extra |")
    print("|---|---|---|---|---|---|---|")
    for codec in ("ffv1", "mjpeg"):
        clean = _video(d / f"clean_{codec}.avi", codec, frames)
        ref = _decode(clean, frames.shape[1:])
        for nbytes in (16, 64, 200):
            for hit in (57, 130):
                bad = d / f"{codec}_{nbytes}_{hit}.avi"
                bad.write_bytes(clean.read_bytes())
                _overwrite(bad, hit, nbytes)
                wrong = set(np.flatnonzero(np.abs(_decode(bad, frames.shape[1:]) - ref).max(axis=(1, 2)) > 0).tolist())
                flagged = {x["frame"] for x in ingest(bad, d / "i.zarr", fps=20.0)["damaged_frames"]}
                r = [frame_ranges(x) or "none" for x in (wrong, flagged, wrong - flagged, flagged - wrong)]
                print(f"| {codec} | {nbytes} | {hit} | " + " | ".join(r) + " |")
    big = _video(d / "big.avi", "ffv1", _frames(500, 608, 608))
    buf = np.empty((100, 608, 608), np.uint8)
    for rep in range(3):  # interleaved: scan, then OpenCV decode
        t = time.perf_counter()
        scan_video(big)
        t_scan = time.perf_counter() - t
        stream = VideoReader(big).stream(0)
        t = time.perf_counter()
        while stream.read_into(buf) == buf.shape[0]:
            pass
        t_dec = time.perf_counter() - t
        print(f"rep {rep}: 500 frames 608x608 FFV1: damage scan {500 / t_scan:.0f} frames/s, OpenCV decode "
              f"{500 / t_dec:.0f} frames/s (scan / decode time {t_scan / t_dec:.2f})")


if __name__ == "__main__":
    main()
