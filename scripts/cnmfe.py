"""Snakemake script of rules ``cnmfe`` and ``cnmfe_gather``: aligned.zarr -> cnmfe.zarr + cells.csv.

Reads ``snakemake.input.aligned`` and, for ``cnmfe_gather``, ``snakemake.input.patches`` (the
scatter jobs' results); ``snakemake.params.config`` holds the ``cnmfe`` and ``general``
groups. Writes ``snakemake.output.cnmfe`` and ``snakemake.output.cells``; logs to
``snakemake.log[0]``.
"""

import logging
import sys

from califlow.cnmfe import run_cnmfe


def main(smk) -> None:
    log_path = smk.log[0] if smk.log else None
    handler = logging.FileHandler(log_path, mode="w") if log_path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    patches = list(smk.input.patches) if "patches" in smk.input.keys() else None
    try:
        run_cnmfe(smk.input.aligned, smk.output.cnmfe, dict(smk.params.config), cells_path=smk.output.cells,
                  patch_files=patches, n_processes=max(1, int(smk.threads)))
    except Exception:
        logging.getLogger("califlow.cnmfe").exception("CNMF-E of %s failed", smk.input.aligned)
        raise


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
