"""Rule cell_qc: cnmfe.zarr + aligned.zarr (+ the manual curation table) -> cells.csv.

``snakemake.params.config`` holds the ``curation`` and ``general`` groups, ``cnmfe.bv_threshold``
and ``export.event_threshold``; gSig and the neuron diameter follow ``snakemake.input.neuron_size``.
"""

from califlow.cells_step import write_cells_csv
from califlow.job import workflow_job
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    with workflow_job(smk):
        config = job_config(smk.params.config, smk.input.neuron_size)
        manual = smk.input.manual[0] if smk.input.manual else None
        write_cells_csv(smk.input.cnmfe, smk.input.aligned, smk.output[0], config, manual=manual)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
