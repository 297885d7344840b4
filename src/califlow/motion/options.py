"""Motion-correction options: the ``motion_correction`` group with the sizes it needs.

The schema holds every default; :func:`motion_options` gathers the resolved values into one
frozen object that :func:`califlow.motion.rigid.estimate_rigid_motion` and
:func:`califlow.motion.nonrigid.estimate_nonrigid_motion` take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

__all__ = ["MotionOptions", "motion_options"]


@dataclass(frozen=True)
class MotionOptions:
    """Resolved motion-correction parameters (pixels of the downsampled movie, frames).

    Attributes
    ----------
    reference : {'BV', 'neuron'}
        Reference image of the rigid registration (``reference_projection_rigid``).
    bv_size : (float, float)
        Vessel scales (``downsampling.BVsize``, derived from gSig when empty), px.
    gsig : float
        Neuron size (``general.gSig``), px.
    max_shift : float
        Largest rigid shift searched, px.
    template_frames, template_iterations : int
        Frames sampled for the template, and its refinement passes.
    min_quality_ratio : float
        Outlier threshold relative to the median frame quality.
    chunk_frames : int
        Frames read at a time (``preprocessing.chunk_frames``).
    pyramid : tuple of {'BV', 'neuron'}
        Non-rigid channel per level, coarse to fine (``non_rigid_pyramid``).
    batch_size : (int, int)
        Non-rigid batch length bounds (``non_rigid_batch_size``), frames.
    """

    reference: str
    bv_size: tuple[float, float]
    gsig: float
    max_shift: float
    template_frames: int
    template_iterations: int
    min_quality_ratio: float
    chunk_frames: int
    pyramid: tuple[str, ...]
    batch_size: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def motion_options(config: Mapping | None = None, **changes) -> MotionOptions:
    """:class:`MotionOptions` from a (partial or resolved) califlow configuration.

    Parameters
    ----------
    config : mapping, optional
        Validated and resolved here (defaults from the schema); gSig must be a number.
    **changes
        Fields to override, e.g. ``max_shift=10``.
    """
    from califlow import sizes
    from califlow.params import numeric_gsig, resolve_config

    cfg = resolve_config(config or {})
    mc = cfg["motion_correction"]
    gsig = numeric_gsig(cfg)
    bv = cfg["downsampling"]["BVsize"] or sizes.bv_size(gsig)
    opts = MotionOptions(
        reference=mc["reference_projection_rigid"], bv_size=(float(bv[0]), float(bv[1])), gsig=gsig,
        max_shift=float(mc["max_shift"]), template_frames=int(mc["template_frames"]),
        template_iterations=int(mc["template_iterations"]), min_quality_ratio=float(mc["min_quality_ratio"]),
        chunk_frames=int(cfg["preprocessing"]["chunk_frames"]), pyramid=tuple(mc["non_rigid_pyramid"]),
        batch_size=(int(mc["non_rigid_batch_size"][0]), int(mc["non_rigid_batch_size"][1])))
    return replace(opts, **changes)
