"""Snakemake script of rule ``concatenate``: enhanced movies + alignment -> results/{animal}/aligned.zarr.

Reads ``snakemake.input.enhanced`` and ``snakemake.input.projections`` (one per session, in
the order of ``snakemake.params.sessions``), ``snakemake.input.alignment`` and
``snakemake.input.neuron_size`` (the gSig recorded in the attrs); writes
``snakemake.output[0]`` atomically (nothing is left under its name if the job fails); logs
progress (frames done, rate, ETA) to ``snakemake.log[0]``.
"""

from califlow.align import concatenate
from califlow.job import workflow_job
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    with workflow_job(smk) as log:
        config = job_config(smk.params.config, smk.input.neuron_size)
        tolerance = float(config["inter_session_alignment"]["fps_tolerance"])  # job_config resolved it
        summary = concatenate(list(smk.input.enhanced), smk.input.alignment, smk.output[0],
                              names=list(smk.params.sessions), projections=list(smk.input.projections),
                              fps_tolerance=tolerance, dtype=config["concatenation"]["dtype"], params=config)
        for s in summary["sessions"]:
            log.info("session %s: frames %d-%d (%g fps)", s["name"], s["start"], s["stop"], s["fps"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
