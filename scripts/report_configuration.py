"""Snakemake script of rule ``report_configuration``: the resolved config -> results/configuration.html.

Reads ``snakemake.params.config`` (the resolved configuration every job ran with) and
``snakemake.params.sessions`` (the sessions sheet as a list of rows); writes the report's
"Configuration" page ``snakemake.output[0]`` (HTML) and logs to ``snakemake.log[0]``.
"""

from califlow import qc
from califlow.job import workflow_job


def main(smk) -> None:
    with workflow_job(smk) as log:
        sessions = list(smk.params.sessions)
        qc.configuration_page(dict(smk.params.config), smk.output[0], sessions=sessions)
        log.info("configuration page written: %d sessions, %s", len(sessions), smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
