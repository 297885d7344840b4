"""Patched, out-of-core CNMF-E on the aligned (concatenated) movie, CaliAli style.

Entry points: :func:`run_cnmfe` (one job) and, for a scattered run, :func:`plan`,
:func:`run_patch_job` (one job per group of patches) and :func:`run_cnmfe` with
``patch_files`` (gather).  Parts: :mod:`~califlow.cnmfe.seeds`,
:mod:`~califlow.cnmfe.initialize`, :mod:`~califlow.cnmfe.background`,
:mod:`~califlow.cnmfe.spatial`, :mod:`~califlow.cnmfe.temporal`,
:mod:`~califlow.cnmfe.merge`, :mod:`~califlow.cnmfe.residual`,
:mod:`~califlow.cnmfe.patches`, :mod:`~califlow.cnmfe.fit` (the refinement loop),
:mod:`~califlow.cnmfe.postprocess` and :mod:`~califlow.cnmfe.data` (streamed access).
"""

from califlow.cnmfe.data import AlignedStore, make_batches
from califlow.cnmfe.options import CnmfeOptions, options_from_config
from califlow.cnmfe.patches import Patch, patch_grid
from califlow.cnmfe.pipeline import Extraction, Plan, gather, plan, run_cnmfe, run_patch_group, run_patch_job
from califlow.cnmfe.seeds import find_seeds

__all__ = [
    "AlignedStore",
    "CnmfeOptions",
    "Extraction",
    "Patch",
    "Plan",
    "find_seeds",
    "gather",
    "make_batches",
    "options_from_config",
    "patch_grid",
    "plan",
    "run_cnmfe",
    "run_patch_group",
    "run_patch_job",
]
