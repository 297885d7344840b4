"""califlow: cross-session one-photon calcium imaging, CaliAli-style, at cohort scale.

The library is organised in sub-packages with one responsibility each (``io``,
``preprocess``, ``motion``, ``align``, ``cnmfe``, ``deconv``, ``simulate``, ``metrics``,
``params``); the Snakemake workflow in this repository calls them through thin scripts.

Importing califlow changes nothing process-wide (environment, streams, signals, threads,
allocator); the settings a long run wants are made by the code that owns the process, for
its duration (:mod:`califlow.job`, the ``califlow`` command).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("califlow")
except PackageNotFoundError:  # pragma: no cover - source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
