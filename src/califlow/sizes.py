"""Every pixel size the pipeline derives from ``gSig``, and the floor the data put under gSig.

``gSig`` (px) sets every size below; each is a continuous function of it, and where an
integer is needed it is rounded half up, so no size jumps by more than a pixel when gSig
moves by 0.1 px.

The measured neuron size (:mod:`califlow.neuron_size`, or ``general.neuron_diameter``)
puts a floor under gSig: :func:`effective_gsig` raises a gSig smaller than
``FLOOR_FRACTION x diameter / DIAMETER_PER_GSIG`` to that value.  Many steps must reach past a neuron to
see its background: the MIN1PIPE top-hat disk (``2 gSig``) erases the bodies of neurons
wider than itself, a ring (``6 gSig``) inside the neuron turns the neuron into background,
and the seeds' contrast window and initialisation box shrink with it.  A gSig far below the
data's neuron size therefore loses most neurons (robustness grid: F1 0.42 at gSig = d/6 for
20-px neurons); with the floor it costs nothing, and the job warns.  Likewise a gSig more
than ``CEILING_FRACTION`` times the data's is lowered to that ceiling (gSig 10 on 8-px
neurons found no seed).  Between the two, gSig is used as given; without a measurement it
is always used as given, as in CaliAli.
"""

from __future__ import annotations

import math

__all__ = ["DIAMETER_PER_GSIG", "FLOOR_FRACTION", "CEILING_FRACTION", "effective_gsig", "gsig_mismatch", "bv_size",
           "enhance_disk_radius", "speck_sigma", "ring_radius", "contrast_window", "local_max_radius", "box_radius",
           "min_pixel", "gsiz"]

#: Half-maximum neuron diameter (px) per unit of gSig, for the gSig that ``gSig: auto`` uses and
#: the floor of :func:`effective_gsig` (CaliAli's own footprints: 7-8 px at gSig 2.5).
DIAMETER_PER_GSIG = 3.0
#: The floor is this fraction of the measured gSig, so that a gSig close to the data's (the
#: seeds' 2.5 on 7-8 px neurons) is used as given; only one clearly too small is raised.
FLOOR_FRACTION = 0.85
#: ... and a gSig more than this many times the measured one is lowered to it (a ring and a
#: contrast window many neurons wide, or a min_pixel larger than the neurons, lose them all).
CEILING_FRACTION = 1.6


def effective_gsig(gsig: float, diameter: float | None = None) -> float:
    """gSig clipped to [``FLOOR_FRACTION``, ``CEILING_FRACTION``] x ``diameter / DIAMETER_PER_GSIG`` (px).

    gSig itself when the diameter is unknown.
    """
    g = float(gsig)
    if diameter is None or not math.isfinite(float(diameter)) or float(diameter) <= 0:
        return g
    fit = float(diameter) / DIAMETER_PER_GSIG
    return min(max(g, FLOOR_FRACTION * fit), CEILING_FRACTION * fit)


def gsig_mismatch(gsig: float, diameter: float | None) -> str | None:
    """'gSig X looks small for these data: ...' when gSig is outside the band :func:`effective_gsig`
    keeps (``FLOOR_FRACTION`` ... ``CEILING_FRACTION`` times the measured gSig); None when it fits
    or no diameter (px, half maximum) was measured."""
    if diameter is None or not math.isfinite(float(diameter)) or diameter <= 0 or not gsig > 0:
        return None
    fit = float(diameter) / DIAMETER_PER_GSIG
    ratio = float(gsig) / fit
    if FLOOR_FRACTION <= ratio <= CEILING_FRACTION:
        return None
    word = "small" if ratio < 1 else "large"
    return (f"gSig {gsig:g} looks {word} for these data: their neurons are about {float(diameter):.1f} px across "
            f"(half-maximum diameter; gSig {fit:.1f} would fit)")


def gsiz(gsig: float) -> float:
    """Neuron box size ``gSiz = 4 gSig`` (px)."""
    return 4.0 * float(gsig)


def bv_size(gsig: float) -> list[float]:
    """Default vessel scales ``BVsize = [0.6, 0.9] gSig`` (px)."""
    g = float(gsig)
    return [round(0.6 * g, 6), round(0.9 * g, 6)]


def enhance_disk_radius(gsig: float) -> float:
    """Radius of the MIN1PIPE top-hat disk, ``szad = 2 gSig`` (px, real-valued)."""
    return 2.0 * float(gsig)


def speck_sigma(gsig: float) -> float:
    """Sigma of MIN1PIPE's dark-speck filling blur, ``szad = 2 gSig`` (px)."""
    return 2.0 * float(gsig)


def ring_radius(gsig: float, bg_neuron_factor: float) -> float:
    """Ring radius of the CNMF-E background, ``bg_neuron_factor x gSiz`` (px)."""
    return float(bg_neuron_factor) * gsiz(gsig)


def contrast_window(gsig: float) -> int:
    """Side of the seeds' contrast neighbourhood, ``4 gSiz + 1`` (px, odd)."""
    return 2 * int(math.floor(2.0 * gsiz(gsig) + 0.5)) + 1


def local_max_radius(gsig: float) -> float:
    """Radius of the disk in which a seed must be the maximum: ``max(1.5, gSig / 2)`` (px).

    Continuous in gSig (CaliAli's square window of side ``round(gSig)`` is even, hence
    off-centre, for gSig in [1.5, 2.5) and [3.5, 4.5)); 1.5 px holds the 8-neighbourhood.
    """
    return max(1.5, 0.5 * float(gsig))


def box_radius(gsig: float) -> int:
    """Half-width of the box cut around a seed at initialisation, ``6 gSig`` (px, at least 2)."""
    return max(2, int(math.floor(6.0 * float(gsig) + 0.5)))


def min_pixel(gsig: float) -> int:
    """Default smallest footprint area, ``round(gSig^2)`` (px, at least 1)."""
    return max(1, int(math.floor(float(gsig) ** 2 + 0.5)))
