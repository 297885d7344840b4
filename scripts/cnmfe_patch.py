"""Snakemake script of rule ``cnmfe_patches``: one scatter job of the patched CNMF-E.

Runs the patches ``job, job + n_jobs, ...`` of ``snakemake.input[0]`` (aligned.zarr) with
``snakemake.params.config`` (``cnmfe`` and ``general`` groups) and writes their components to
``snakemake.output[0]`` (.npz, read by ``cnmfe_gather``); logs to ``snakemake.log[0]``.
"""

import logging
import sys

from califlow.cnmfe import run_patch_job


def main(smk) -> None:
    log_path = smk.log[0] if smk.log else None
    handler = logging.FileHandler(log_path, mode="w") if log_path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        done = run_patch_job(smk.input[0], smk.output[0], dict(smk.params.config), int(smk.params.job),
                             int(smk.params.n_jobs))
        logging.getLogger("califlow.cnmfe").info("patches %s done", done)
    except Exception:
        logging.getLogger("califlow.cnmfe").exception("CNMF-E patch job %s failed", smk.params.job)
        raise


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
