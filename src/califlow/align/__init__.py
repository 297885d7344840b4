"""califlow.align: inter-session alignment and concatenation.

- :func:`align_sessions` (translation, groupwise non-rigid demons, BV stability score and
  neuron fallback, common field of view) → :class:`Alignment`; :func:`save_alignment` /
  :func:`load_alignment` for ``alignment.zarr``.
- :func:`apply_map`, :func:`map_points`, :func:`invert_map`: move images and points between
  a session frame and the aligned frame.
- :func:`concatenate`: warp every session's enhanced movie into ``aligned.zarr``.
- :func:`residual_misalignment`, :func:`alignment_metrics`: quality measures.
"""

from califlow.align.concat import concatenate, read_projections
from califlow.align.maps import apply_map, identity_map, invert_map, map_points
from califlow.align.pipeline import STAGES, Alignment, align_options, align_sessions, load_alignment, save_alignment
from califlow.align.qc import save_overlays
from califlow.align.quality import alignment_metrics, residual_misalignment
from califlow.align.score import bv_stability_score

__all__ = [
    "Alignment",
    "STAGES",
    "align_options",
    "align_sessions",
    "alignment_metrics",
    "apply_map",
    "bv_stability_score",
    "concatenate",
    "identity_map",
    "invert_map",
    "load_alignment",
    "map_points",
    "read_projections",
    "residual_misalignment",
    "save_alignment",
    "save_overlays",
]
