"""Noise-constrained deconvolution with a convex solver (``method_deconvolution: cvxpy``).

Solves the problem OASIS solves, as a second-order cone program:

    minimise    sum_t s_t
    subject to  s = G c >= 0   (s_t = c_t - g1 c_{t-1} - g2 c_{t-2}, c_{-1} = c_{-2} = 0)
                ||y - b - c||_2 <= sn sqrt(T)          (observed samples only)
                b >= 0 (bas_nonneg) or b >= min(y), unless b is given

with the primary solver of ``solvers`` and, if it fails, the fallback. Needs the optional
``cvxpy`` extra (``pip install 'califlow[cvxpy]'``). Memory and time grow faster than
linearly with T; use it for checks and short traces, OASIS for production.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from califlow.errors import ConfigError, InputError

__all__ = ["solve_cvxpy", "ALLOWED_SOLVERS"]

ALLOWED_SOLVERS = ("ECOS", "SCS", "CVXOPT")


def _import_cvxpy():
    try:
        import cvxpy
    except ImportError:
        raise ConfigError("method_deconvolution 'cvxpy' needs the optional cvxpy extra; install it "
                          "with: pip install 'califlow[cvxpy]' (or use method_deconvolution: oasis)") from None
    return cvxpy


def _ar_matrix(g: Sequence[float], T: int) -> sparse.csr_matrix:
    """Sparse (T, T) matrix G with (G c)_t = c_t - sum_i g_i c_{t-1-i}."""
    diags = [np.ones(T)] + [-float(gi) * np.ones(T - 1 - i) for i, gi in enumerate(g)]
    offsets = [0] + [-(i + 1) for i in range(len(g))]
    return sparse.diags(diags, offsets, shape=(T, T), format="csr")


def solve_cvxpy(y, g: Sequence[float], sn: float, *, bl: float | None = None, bas_nonneg: bool,
                solvers: Sequence[str]):
    """Noise-constrained deconvolution with cvxpy.

    Parameters
    ----------
    y : array (T,)
        Trace (NaN = dropped sample).
    g : sequence of 1 or 2 floats
        AR coefficients.
    sn : float
        Noise standard deviation (units of y).
    bl : float, optional
        Baseline; optimised when None.
    bas_nonneg : bool
        ``b >= 0`` when optimised, else ``b >= min(y)``.
    solvers : sequence of str
        Primary and fallback solver names among ECOS, SCS, CVXOPT.

    Returns
    -------
    c, s : float64 arrays (T,) (``s_0 = c_0``)
    b : float
    lam : float
        Penalty of the equivalent penalised problem, from the dual of the noise constraint.
    """
    cp = _import_cvxpy()
    names = _solver_names(solvers)
    y = np.asarray(y, dtype=np.float64)
    T = y.shape[0]
    obs = np.flatnonzero(~np.isnan(y))
    y_obs = y[obs]
    G = _ar_matrix(g, T)
    c = cp.Variable(T)
    s = G @ c
    cons = [s >= 0]
    if bl is None:
        b = cp.Variable()
        lower = 0.0 if bas_nonneg else float(y_obs.min())
        cons.append(b >= lower)
        resid = y_obs - b - c[obs]
    else:
        b = float(bl)
        resid = (y_obs - b) - c[obs]
    noise = cp.norm(resid, 2) <= float(sn) * math.sqrt(obs.size)
    cons.append(noise)
    problem = cp.Problem(cp.Minimize(cp.sum(s)), cons)
    _solve(cp, problem, names, c)
    c_val = np.asarray(c.value, dtype=np.float64)
    b_val = float(b.value) if bl is None else float(bl)
    dual = noise.dual_value
    dual = float(np.ravel(dual)[0]) if dual is not None else float("nan")
    lam = float(sn) * math.sqrt(obs.size) / dual if dual and dual > 0 else 0.0
    c_val = np.maximum(c_val, 0.0)
    s_val = G @ c_val
    return c_val, np.maximum(s_val, 0.0), b_val, lam


def _solver_names(solvers) -> list[str]:
    """Upper-case solver names from a sequence or a comma-separated string; ConfigError if not allowed."""
    names = [str(s).strip().upper() for s in (solvers.split(",") if isinstance(solvers, str) else solvers)]
    names = [s for s in names if s]
    bad = [s for s in names if s not in ALLOWED_SOLVERS]
    if bad or not names:
        raise ConfigError(f"solvers {list(solvers)!r} is not allowed; allowed: one or two of "
                          + ", ".join(ALLOWED_SOLVERS))
    return names


def _solve(cp, problem, names: Sequence[str], c) -> None:
    """Solve ``problem`` with the first of ``names`` that is installed and reaches an optimum
    (also 'optimal_inaccurate') with a value for the variable ``c``; InputError listing every
    attempt when none does."""
    installed = set(cp.installed_solvers())
    messages = []
    for name in names:
        if name not in installed:
            messages.append(f"{name}: not installed")
            continue
        try:
            problem.solve(solver=name)
        except cp.error.SolverError as exc:
            messages.append(f"{name}: {exc}")
            continue
        if problem.status in ("optimal", "optimal_inaccurate") and c.value is not None:
            return
        messages.append(f"{name}: status {problem.status}")
    raise InputError("cvxpy could not solve the deconvolution (" + "; ".join(messages) + ")")
