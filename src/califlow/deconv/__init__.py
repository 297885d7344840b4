"""Spike deconvolution of calcium traces: OASIS AR(1)/AR(2), constrained FOOPSI, estimation.

Public API (see each function's docstring):

* :func:`deconvolve` - one trace, the spike-extraction tool's parameters (bl, c1, g, sn, p,
  s_min, bas_nonneg, optimize_g, noise_range, noise_method, lags, fudge_factor, method,
  solvers); :func:`deconvolve_batch` - rows of a (K, T) array on all cores.
* :func:`deconvolve_cnmfe` / :func:`deconvolve_cnmfe_batch` - CNMF-E ``deconv_options``.
* :func:`get_noise`, :func:`estimate_time_constant` - vectorised parameter estimation.
* :func:`oasis_ar1`, :func:`oasis_ar2`, :func:`constrained_oasis_ar1`,
  :func:`constrained_oasis_ar2` - the numba solvers.

The spike-extraction tool (``califlow deconvolve``) is :mod:`califlow.deconv.tool`.
"""

from califlow.deconv.estimate import estimate_time_constant, get_noise
from califlow.deconv.foopsi import (
    BatchResult,
    DeconvResult,
    deconvolve,
    deconvolve_batch,
    deconvolve_cnmfe,
    deconvolve_cnmfe_batch,
    impulse_response,
)
from califlow.deconv.oasis import (
    constrained_oasis_ar1,
    constrained_oasis_ar2,
    oasis_ar1,
    oasis_ar2,
)

__all__ = [
    "BatchResult",
    "DeconvResult",
    "constrained_oasis_ar1",
    "constrained_oasis_ar2",
    "deconvolve",
    "deconvolve_batch",
    "deconvolve_cnmfe",
    "deconvolve_cnmfe_batch",
    "estimate_time_constant",
    "get_noise",
    "impulse_response",
    "oasis_ar1",
    "oasis_ar2",
]
