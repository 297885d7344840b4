"""The range labs record: neuron size, density, signal level, camera and field of view.

:func:`with_neuron_diameter` rescales a configuration to another neuron size as if the same
tissue were imaged at another magnification (spacing, margins, halo and field of view grow
with the neurons, the neuron count follows the area); :func:`median_pixel_pnr` measures the
signal level of a simulated animal the way users quote it, and :func:`with_pixel_pnr` sets
it.  The named presets built from them live in :data:`califlow.simulate.PRESETS`.
"""

from __future__ import annotations

import numpy as np

from califlow.simulate.config import SimulationConfig

__all__ = ["with_neuron_diameter", "median_pixel_pnr", "with_pixel_pnr", "with_density"]

#: The neuron diameter the base presets are drawn for (px, at half maximum).
BASE_DIAMETER = 7.0


def with_neuron_diameter(config: SimulationConfig, diameter: float, *, max_side: int = 512,
                         min_neurons: int = 40, keep_fov: bool = False) -> SimulationConfig:
    """The same preparation with neurons of ``diameter`` px (half-maximum diameter).

    Lengths tied to the neuron size (``min_spacing``, ``edge_margin``, ``halo_sigma``,
    ``local_sigma``) scale by ``diameter / config.neuron_diameter``.  The field of view grows
    by the same factor up to ``max_side`` px per side (unless ``keep_fov``), and the neuron
    count follows the area in neuron units, with at least ``min_neurons``, so that the
    relative density stays that of ``config`` wherever the field allows it.

    Parameters
    ----------
    config : SimulationConfig
    diameter : float
        Target median half-maximum diameter (px), > 0.
    max_side : int
        Largest side of the scaled field of view (px).
    min_neurons : int
        Fewest neurons placed.
    keep_fov : bool
        Keep ``height`` and ``width`` (only the neurons change).
    """
    f = float(diameter) / float(config.neuron_diameter)
    if keep_fov:
        h, w = config.height, config.width
    else:
        grow = max(1.0, f)
        h = int(min(max(config.height, round(config.height * grow)), max(max_side, config.height)))
        w = int(min(max(config.width, round(config.width * grow)), max(max_side, config.width)))
    area = (h * w) / (config.height * config.width)
    n = max(int(min_neurons), int(round(config.n_neurons * area / f ** 2)))
    return config.replace(neuron_diameter=float(diameter), height=h, width=w, n_neurons=n,
                          min_spacing=config.min_spacing * f, edge_margin=max(3.0, config.edge_margin * f),
                          halo_sigma=config.halo_sigma * max(1.0, f), local_sigma=config.local_sigma * max(1.0, f))


def with_density(config: SimulationConfig, spacing_diameters: float, fill: float) -> SimulationConfig:
    """Neurons at least ``spacing_diameters`` diameters apart, covering ``fill`` of the field.

    ``fill`` is the summed half-maximum disk area over the field area (0.05: sparse,
    0.6 and a spacing below 1: touching and overlapping).
    """
    d = float(config.neuron_diameter)
    n = max(1, int(round(fill * config.height * config.width / (np.pi * d * d / 4))))
    return config.replace(n_neurons=n, min_spacing=spacing_diameters * d)


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
