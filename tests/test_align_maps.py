"""Alignment maps (warp, inverse, points) and groupwise translation against known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from califlow.align.fov import common_fov, largest_rectangle
from califlow.align.maps import BilinearWarp, apply_map, identity_map, invert_map, map_points, sample_bilinear
from califlow.align.score import random_smooth_field
from califlow.align.translation import groupwise_translation, phase_shift
from califlow.errors import InputError


def _smooth_map(shape, seed, amp=6.0, shift=(3.3, -4.7), offset=(2.0, 1.0)):
    rng = np.random.default_rng(seed)
    d = random_smooth_field(shape, 40.0, amp, rng)
    return identity_map(shape, (offset[0] + shift[0], offset[1] + shift[1])) + d


def _texture(shape, seed, sigma=2.0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)


def test_bilinear_warp_matches_opencv():
    img = _texture((60, 70), 0)
    m = _smooth_map((50, 55), 1)
    ours = BilinearWarp(m, img.shape, fill=np.nan)(img[None])[0]
    ref = cv2.remap(img, m[1], m[0], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    ok = np.isfinite(ours) & np.isfinite(ref)
    assert ok.mean() > 0.8
    # OpenCV quantises coordinates to 1/32 px; ours is exact
    assert np.abs(ours[ok] - ref[ok]).max() < 0.05 * np.abs(img).max()
    exact = sample_bilinear(img, m.reshape(2, -1).T)
    assert np.allclose(ours.ravel()[np.isfinite(exact)], exact[np.isfinite(exact)], atol=1e-5)
    # a stack of frames is warped in one call, frame by frame identical
    stack = np.stack([img, 2 * img, -img])
    out = BilinearWarp(m, img.shape, fill=0.0)(stack)
    assert np.allclose(out[1], 2 * out[0], atol=1e-5) and np.allclose(out[2], -out[0], atol=1e-5)


def test_map_points_round_trip_and_inverse_map():
    shape = (80, 90)
    m = _smooth_map(shape, 2)
    rng = np.random.default_rng(3)
    aligned_pts = rng.uniform([15, 15], [65, 75], (200, 2))
    session_pts = map_points(aligned_pts, m, to="session")
    back = map_points(session_pts, m, to="aligned")
    assert np.nanmax(np.abs(back - aligned_pts)) < 1e-3
    # the dense inverse agrees with the point inverse
    inv = invert_map(m, (85, 95))
    via_dense = sample_bilinear(inv, session_pts).T
    assert np.nanmax(np.abs(via_dense - aligned_pts)) < 0.05  # OpenCV samples at 1/32 px
    # outside points are NaN, not garbage
    far = map_points(np.array([[500.0, 500.0]]), m, to="aligned")
    assert np.isnan(far).all()


def test_apply_map_there_and_back():
    img = _texture((85, 95), 4, sigma=3.0)
    m = _smooth_map((80, 90), 5)
    aligned = apply_map(img, m)
    assert aligned.shape == (80, 90)
    back = apply_map(aligned, m, to="session", session_shape=img.shape)
    ok = np.isfinite(back)
    assert ok.mean() > 0.6
    inner = ok.copy()
    inner[:10] = inner[-10:] = False
    inner[:, :10] = inner[:, -10:] = False
    err = np.abs(back - img)[inner]
    assert np.percentile(err, 99) < 0.05 * np.ptp(img)
    with pytest.raises(ValueError, match="session_shape"):
        apply_map(aligned, m, to="session")


def _fourier_shift(img, d):
    """img(p - d): content moved by +d (exact, periodic)."""
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * d[0] + kx * d[1])))).astype(np.float32)


def test_phase_shift_subpixel_large_offset():
    big = _texture((200, 210), 6)
    a = big[40:168, 40:180]
    for true in [(12.3, -20.7), (-25.4, 3.15), (0.4, 0.0)]:
        b = _fourier_shift(big, true)[40:168, 40:180]    # b(p + d) = a(p)
        d, q = phase_shift(a, b)
        assert np.allclose(d, true, atol=0.05), (d, true)
        assert q > 10


def test_groupwise_translation_is_mean_centred_and_deterministic():
    base = _texture((200, 200), 7)
    true = np.array([[0.0, 0.0], [15.2, -7.9], [-21.3, 12.6], [4.4, 22.1], [-9.7, -18.8]])
    imgs, masks = [], []
    for t in true:
        m = identity_map((150, 150), (25 + t[0], 25 + t[1]))
        imgs.append(BilinearWarp(m, base.shape, fill=0.0)(base[None])[0])
        masks.append(np.ones((150, 150), bool))
    est, info = groupwise_translation(imgs, masks)
    # session s shows base(q + 25 + t_s): the common point at base position p + 25 + mean(t)
    # sits at q = p - (t_s - mean(t)) in session s
    expect = -(true - true.mean(axis=0))
    assert np.abs(est.mean(axis=0)).max() < 1e-9
    assert np.abs(est - expect).max() < 0.1, (est, expect)
    again, _ = groupwise_translation(imgs, masks)
    assert np.array_equal(est, again)
    assert len(info["links"]) >= 4


def test_largest_rectangle_and_fov_policies():
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:11] = True
    mask[5, 4] = False
    assert largest_rectangle(mask) == (2, 8, 5, 11)
    valid = np.ones((3, 100, 100), bool)
    valid[1, :, :10] = False             # a little loss
    valid[2, :60, :] = False             # one bad session
    with pytest.raises(InputError, match="session 'c' limits it"):
        common_fov(valid, ["a", "b", "c"], policy="crop", max_fov_loss=0.3)
    info = common_fov(valid, ["a", "b", "c"], policy="drop", max_fov_loss=0.3)
    assert info["dropped"] == ["c"] and info["kept"] == [0, 1] and info["box"] == (0, 100, 10, 100)
    info = common_fov(valid, ["a", "b", "c"], policy="pad", max_fov_loss=0.3)
    assert info["box"] == (0, 100, 0, 100) and info["limiting_session"] == "c"
