"""Snakemake script of rule ``qc_seeds``: aligned.zarr -> results/{animal}/qc/seeds.png.

Reads ``snakemake.input.aligned``, ``snakemake.input.neuron_size`` (gSig follows it) and
``snakemake.params.config`` (groups cnmfe, general); writes the seeding figure
(:mod:`califlow.seeding_qc`) to ``snakemake.output[0]`` and logs the seed count of each
setting to ``snakemake.log[0]``.
"""

from pathlib import Path

from califlow.job import workflow_job
from califlow.seeding_qc import seeding_from_results


def main(smk) -> None:
    with workflow_job(smk) as log:
        animal_dir = Path(smk.input.aligned).parent
        _, counts = seeding_from_results(animal_dir, dict(smk.params.config), smk.output[0])
        for c in counts:
            log.info("%s: min_corr %.3f, min_pnr %.2f -> %d seeds", c["setting"], c["min_corr"], c["min_pnr"],
                     c["seeds"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
