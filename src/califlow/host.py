"""Machine-dependent values, resolved inside the job that uses them.

Nothing here may reach a rule's ``params`` or :func:`califlow.params.resolve_config`: the
same configuration must mean the same jobs on every machine. A job resolves what it needs
(today only the memory budget of CNMF-E) when it starts and records the value it used in
its output's attrs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["physical_memory_gb", "cgroup_memory_gb", "memory_budget_gb", "with_memory_budget"]

#: Memory (GB) a CNMF-E job's request holds beyond ``memory_size_to_use`` (the rule's
#: ``cnmfe_mem_mb`` adds 1 GB per attempt): the interpreter, libraries and small arrays.
JOB_OVERHEAD_GB = 1.0

#: cgroup files holding the memory limit of this process's group (v2, then v1).
_CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def physical_memory_gb() -> float:
    """Total physical memory of this machine (GB)."""
    import psutil

    return psutil.virtual_memory().total / 1e9


def cgroup_memory_gb(files=_CGROUP_LIMIT_FILES) -> float | None:
    """Memory limit of this process's cgroup (GB; SLURM and containers set one), or None."""
    for name in files:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text and text != "max" and text.isdigit() and int(text) < 2 ** 60:
            return int(text) / 1e9
    return None


def memory_budget_gb(configured: float | None, mem_mb: float | None = None) -> tuple[float, str]:
    """The memory CNMF-E may plan for (GB), and where the value came from.

    Parameters
    ----------
    configured : float or None
        ``cnmfe.memory_size_to_use``; a number is used as it is.
    mem_mb : float, optional
        The job's ``resources.mem_mb`` (MB) when it runs under Snakemake.

    Returns
    -------
    budget : float
        ``configured`` when set; otherwise the least of the job's request less
        :data:`JOB_OVERHEAD_GB`, the cgroup limit and the physical memory, rounded to 0.01 GB.
    source : str
        ``"config"``, ``"resources.mem_mb"``, ``"cgroup"`` or ``"physical memory"``.
    """
    if configured is not None:
        return float(configured), "config"
    choices = [(physical_memory_gb(), "physical memory")]
    limit = cgroup_memory_gb()
    if limit is not None:
        choices.append((limit, "cgroup"))
    if mem_mb:
        choices.append((max(0.5, float(mem_mb) / 1000 - JOB_OVERHEAD_GB), "resources.mem_mb"))
    value, source = min(choices)
    return round(value, 2), source


def with_memory_budget(config: Mapping, mem_mb: float | None = None) -> dict:
    """A copy of a resolved config whose ``cnmfe.memory_size_to_use`` is a number (see :func:`memory_budget_gb`).

    The result is still a valid configuration, so the value reaches the outputs' attrs with
    the rest of it; where it came from is logged.
    """
    import logging

    cfg = copy.deepcopy(dict(config))
    cn = dict(cfg.get("cnmfe", {}))
    budget, source = memory_budget_gb(cn.get("memory_size_to_use"), mem_mb)
    if source != "config":
        logging.getLogger("califlow.cnmfe").info(
            "memory_size_to_use: %.2f GB (from %s on %s)", budget, source, os.uname().nodename)
    cn["memory_size_to_use"] = budget
    cfg["cnmfe"] = cn
    return cfg
