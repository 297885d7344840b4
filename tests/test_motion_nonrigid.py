"""Non-rigid motion correction: batches, dense flow, better than rigid on wobble, inert on rigid motion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from califlow.motion.nonrigid import dense_flow, motion_batches
from califlow.simulate import preset, simulate_animal
from califlow.simulate.scores import nonrigid_vs_rigid

SIZE = 128
FRAMES = 400


def test_batches_respect_bounds_and_cut_at_jumps():
    rng = np.random.default_rng(0)
    score = rng.random(1000) * 0.1
    score[[137, 402, 403, 777]] = 5.0
    edges = motion_batches(score, (20, 60))
    sizes = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == 1000
    assert sizes.min() >= 20 and sizes.max() <= 60
    assert {137, 777} <= set(edges.tolist())
    assert motion_batches(np.zeros(15), (20, 60)).tolist() == [0, 15]
    with pytest.raises(ValueError, match="non_rigid_batch_size"):
        motion_batches(score, (30, 20))


def test_dense_flow_recovers_a_smooth_field():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.random((128, 128)).astype(np.float32), (0, 0), 2.0)
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    u = np.stack([1.5 * np.sin(2 * np.pi * xx / 200), 1.0 * np.cos(2 * np.pi * yy / 160)]).astype(np.float32)
    moving = cv2.remap(img, xx - u[1], yy - u[0], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    est = dense_flow([img, img], [moving, moving])
    inner = (slice(None), slice(16, -16), slice(16, -16))
    rms_true = np.sqrt((u[inner] ** 2).sum(0).mean())
    rms_err = np.sqrt(((est - u)[inner] ** 2).sum(0).mean())
    assert rms_err < 0.25 * rms_true


@pytest.mark.parametrize("name,wobbly", [("wobble", True), ("default", False)])
def test_nonrigid_vs_rigid(name, wobbly):
    cfg = preset(name, height=SIZE, width=SIZE, n_sessions=2, frames_per_session=FRAMES)
    animal = simulate_animal(cfg, seed=31)
    res = nonrigid_vs_rigid(animal)
    r_rigid, r_nonrigid, nr, box = res["r_rigid"], res["r_nonrigid"], res["nonrigid"], res["box"]
    if wobbly:
        assert r_nonrigid < 0.85 * r_rigid  # 0.85 -> 0.65 px here; 0.91 -> 0.56 px at 176 px, 600 frames
        assert nr.accepted.mean() > 0.5
    else:
        assert r_rigid < 0.15
        assert r_nonrigid <= r_rigid + 0.01
    # the warp applies the fields: a frame corrected with them matches the rigid one on average
    frames = np.arange(0, 50)
    movie = animal.session_frames(0).astype(np.float32)
    out = nr.warp(movie[frames], frames, res["shifts"][frames], box)
    assert out.shape == (50, box[1] - box[0], box[3] - box[2]) and np.isfinite(out).mean() > 0.95
