"""califlow.preprocess.resample: streamed linear resampling in time equals np.interp per pixel."""

from __future__ import annotations

import numpy as np
import pytest

from califlow.preprocess.resample import TimeResampler, resampled_length


@pytest.mark.parametrize("fps_in, fps_out", [(30.3, 20.0), (20.0, 30.3), (30.0, 10.0), (20.0, 20.0 + 1e-3)])
@pytest.mark.parametrize("blocks", [[7, 1, 50, 3, 39], [100]])
def test_streamed_resampling_matches_interp(fps_in, fps_out, blocks):
    rng = np.random.default_rng(4)
    n = sum(blocks)
    movie = rng.normal(size=(n, 3, 4)).astype(np.float32)
    r = TimeResampler(fps_in, fps_out)
    out, a = [], 0
    for b in blocks:
        out += list(r.feed(movie[a:a + b]))
        a += b
    got = np.concatenate(out) if out else np.zeros((0, 3, 4), np.float32)
    t_out = np.arange(resampled_length(n, fps_in, fps_out)) / fps_out
    want = np.stack([np.interp(t_out, np.arange(n) / fps_in, movie[:, i, j])
                     for i in range(3) for j in range(4)], axis=-1).reshape(-1, 3, 4)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert t_out[-1] <= (n - 1) / fps_in + 1e-9 < t_out[-1] + 1 / fps_out


def test_a_calcium_transient_keeps_its_time_and_size():
    fps_in, fps_out = 30.3, 20.0
    t = np.arange(600) / fps_in
    trace = np.where(t > 10.0, np.exp(-(t - 10.0) / 0.5), 0.0).astype(np.float32)  # 0.5 s decay
    r = TimeResampler(fps_in, fps_out)
    got = np.concatenate(list(r.feed(trace[:, None, None]))).ravel()
    t_out = np.arange(got.size) / fps_out
    assert abs(t_out[np.argmax(got)] - 10.0) <= 1 / fps_out + 1e-6
    assert got.max() > 0.9 and abs(got.sum() / fps_out - trace.sum() / fps_in) < 0.02
