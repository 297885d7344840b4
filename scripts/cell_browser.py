"""Rule cell_browser: cnmfe.zarr + cells.csv (+ aligned.zarr for the background) -> cells.html."""

from califlow.cell_browser import write_cell_browser
from califlow.job import workflow_job


def main(smk) -> None:
    with workflow_job(smk):
        write_cell_browser(smk.output[0], smk.input.cnmfe, smk.input.cells, smk.input.aligned,
                           title=f"califlow cells: {smk.wildcards.animal}")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
