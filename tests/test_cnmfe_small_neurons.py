"""Initialisation of small, densely packed neurons (gSig 1.5, 5-px neurons 5 px apart)."""

from __future__ import annotations

import numpy as np
import pytest

from califlow.cnmfe.data import InMemorySource
from califlow.cnmfe.initialize import blob_dilation, initialize
from califlow.cnmfe.options import options_from_config
from califlow.cnmfe.seeds import disk_footprint

H = W = 32
T = 1000
#: A bright neuron and three dimmer neighbours 5 px away (centre to centre), gSig 1.5.
CENTRES = [(16, 12.5), (16, 17.5), (11.5, 15), (20.5, 15)]
SEEDS = np.array([[16, 12], [16, 18], [11, 15], [21, 15]])


def _scene(seed: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    A = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2)) for cy, cx in CENTRES])
    A[A < 0.05] = 0
    s = (rng.random((len(CENTRES), T)) < 0.01) * rng.uniform(2, 4, (len(CENTRES), T))
    C = np.zeros(s.shape)
    for t in range(1, T):
        C[:, t] = np.exp(-1 / 8) * C[:, t - 1] + s[:, t]
    C[0] *= 5  # bright
    C[1:] *= 3  # dim: peak-to-noise ratio of their centre pixels about 6-9 (min_pnr is 6)
    Y = np.einsum("khw,kt->thw", A, C) + rng.normal(0, 1, (T, H, W))
    return A.reshape(len(CENTRES), -1), Y.astype(np.float32).reshape(T, -1)


def test_blob_dilation_follows_gsig():
    assert blob_dilation(2.5) == 3  # CaliAli's strel('disk', 3) at its default gSig
    assert blob_dilation(1.5) == pytest.approx(1.8)
    assert blob_dilation(5.0) == 6
    sizes = [disk_footprint(blob_dilation(g)).sum() for g in np.arange(1.0, 5.01, 0.1)]
    assert np.all(np.diff(sizes) >= 0) and np.max(np.diff(sizes)) <= 12  # grows a few pixels at a time


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dim_neighbours_of_a_bright_small_neuron_are_initialised(seed):
    """A 3-px blob dilation (CaliAli's, for 7-8 px neurons) covers the neighbours of a 5-px neuron:
    the bright neuron's trace and footprint take their pixels, they are peeled off with it and
    fail the peeled peak-to-noise test.  The dilation scaled with gSig keeps each neuron to itself."""
    A, Y = _scene(seed)
    opts = options_from_config({"general": {"gSig": 1.5}})
    source = InMemorySource(lambda b: Y, [(0, T)], shape=(H, W))
    model = initialize(source, SEEDS, np.arange(len(SEEDS)), opts)
    assert sorted(model.ids.tolist()) == [0, 1, 2, 3]
    est = model.A.toarray().T
    for k, i in enumerate(model.ids):
        r = np.corrcoef(est[k], A[i])[0, 1]
        assert r > 0.7, f"neuron {i}: footprint correlation {r:.2f}"
