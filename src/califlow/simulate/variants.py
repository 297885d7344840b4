"""Signal level of a simulated animal as users quote it: the median single-pixel PNR.

:func:`median_pixel_pnr` measures it from the ground truth and :func:`with_pixel_pnr` sets
it (the ``pnr3`` / ``pnr20`` presets were calibrated with it).  Size, density, camera and
field of view are set by :meth:`SimulationConfig.with_neuron_diameter`,
:meth:`SimulationConfig.with_density` and :meth:`SimulationConfig.as_uint16`.
"""

from __future__ import annotations

import numpy as np

from califlow.simulate.config import SimulationConfig

__all__ = ["median_pixel_pnr", "with_pixel_pnr"]


def median_pixel_pnr(animal) -> float:
    """Median single-pixel peak-to-noise ratio of the active neurons of a simulated animal.

    For each neuron and session in which it is active: the largest noise-free signal it adds
    to its brightest pixel (footprint peak x peak calcium, illumination and vessel shading
    included, DN) over the single-frame noise standard deviation at that pixel
    (``sqrt(gain * baseline + read_noise**2)``, DN).  This is the PNR a user reads off one
    pixel of the raw movie; it does not depend on the neuron size.

    Parameters
    ----------
    animal : SimulatedAnimal

    Returns
    -------
    float
    """
    gt = animal.ground_truth
    c = animal.config
    K = gt.n_neurons
    F = gt.footprints_sparse.tocsr()
    values = []
    for s in range(gt.n_sessions):
        rows = F[s * K:(s + 1) * K]
        peak_val = np.asarray(rows.max(axis=1).toarray()).ravel()
        peak_pix = np.asarray(rows.argmax(axis=1)).ravel()
        base = gt.baseline_session[s].ravel()[peak_pix]
        sd = np.sqrt(np.maximum(c.gain * base, 0) + c.read_noise ** 2 + 1.0 / 12)
        cmax = gt.C[:, gt.session_slice(s)].max(axis=1)
        ok = gt.active[:, s] & (peak_val > 0)
        values.append((peak_val * cmax / sd)[ok])
    v = np.concatenate(values) if values else np.zeros(0)
    return float(np.median(v)) if v.size else 0.0


def with_pixel_pnr(config: SimulationConfig, target: float, seed: int = 0, n_iter: int = 4) -> SimulationConfig:
    """``config`` with the event ``amplitude`` set so that :func:`median_pixel_pnr` is ``target``.

    The PNR is nearly proportional to the amplitude (the shot noise of the transients is
    ignored), so a few secant steps on ``simulate_animal(config, seed)`` (ground truth only,
    no frame is rendered) converge.
    """
    from califlow.simulate.animal import simulate_animal

    cfg = config
    for _ in range(int(n_iter)):
        pnr = median_pixel_pnr(simulate_animal(cfg, seed))
        if pnr <= 0:
            break
        cfg = cfg.replace(amplitude=float(cfg.amplitude * target / pnr))
        if abs(pnr / target - 1) < 0.02:
            break
    return cfg
