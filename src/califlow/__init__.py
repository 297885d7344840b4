"""califlow: cross-session one-photon calcium imaging, CaliAli-style, at cohort scale.

The library is organised in sub-packages with one responsibility each (``io``,
``preprocess``, ``motion``, ``align``, ``cnmfe``, ``deconv``, ``simulate``, ``metrics``,
``params``); the Snakemake workflow in this repository calls them through thin scripts.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("califlow")
except PackageNotFoundError:  # pragma: no cover - source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
