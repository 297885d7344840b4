"""califlow: cross-session one-photon calcium imaging, CaliAli-style, at cohort scale.

The library is organised in sub-packages with one responsibility each (``io``,
``preprocess``, ``motion``, ``align``, ``cnmfe``, ``deconv``, ``simulate``, ``metrics``,
``params``); the Snakemake workflow in this repository calls them through thin scripts.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# Idle OpenMP threads (numba's parallel kernels) sleep instead of spinning: califlow
# alternates many short parallel kernels with BLAS calls, and spinning threads then steal
# the few cores from the work (measured: 1.1-1.7x slower CNMF-E initialisation on 2 cores).
# Read by libgomp when numba first loads it, so it must be set before any parallel kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("califlow")
except PackageNotFoundError:  # pragma: no cover - source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
