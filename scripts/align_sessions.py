"""Snakemake script of rule ``align_sessions``: every session's projections -> results/{animal}/alignment.zarr.

Reads ``snakemake.input.projections`` (one ``projections.zarr`` per session, in the order of
``snakemake.params.sessions``) and ``snakemake.params.config`` (config groups
``inter_session_alignment`` and ``general``); writes ``snakemake.output.alignment``
atomically and the QC overlays ``snakemake.output.qc_before`` / ``qc_after`` (PNG); logs the
stages, the translations, the BV score and the path taken (BV / neuron fallback / none) to
``snakemake.log[0]``.
"""

from califlow.align import align_options, align_sessions, read_projections, save_alignment, save_overlays
from califlow.job import workflow_job
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    with workflow_job(smk) as log:
        names = list(smk.params.sessions)
        paths = list(smk.input.projections)
        log.info("aligning %d sessions: %s", len(names), ", ".join(names))
        projections = [read_projections(p) for p in paths]
        config = job_config(smk.params.config, smk.input.neuron_size)
        al = align_sessions(projections, names, align_options(config))
        save_alignment(al, smk.output.alignment, inputs=paths, config=config)
        last = list(al.metrics)[-1]
        save_overlays(al, smk.output.qc_before, stages=["none"],
                      title=f"before alignment: {', '.join(al.info['qc_sessions'])}")
        save_overlays(al, smk.output.qc_after, stages=[last], title=f"after alignment ({last}, path {al.path})")
        log.info("alignment path %s, BV score %s, aligned frame %dx%d, sessions dropped: %s", al.path,
                 "n/a" if al.bv_score is None else f"{al.bv_score:.2f}", *al.shape, al.dropped or "none")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
