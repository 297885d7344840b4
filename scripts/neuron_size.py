"""Snakemake script of rule ``neuron_size``: every session's recording -> results/{animal}/neuron_size.json.

Reads ``snakemake.input`` (one recording per session, in the order of
``snakemake.params.sessions``), ``snakemake.params.fps`` (sheet frame rates, None where
absent) and ``snakemake.params.config`` (groups general, downsampling, preprocessing);
writes ``snakemake.output[0]`` atomically; logs the estimate and its warnings to
``snakemake.log[0]``.
"""

from califlow.job import workflow_job
from califlow.neuron_size_step import measure_recordings, write_neuron_size


def main(smk) -> None:
    with workflow_job(smk) as log:
        names = list(smk.params.sessions)
        content = measure_recordings(list(smk.input), names, dict(smk.params.config), list(smk.params.fps))
        m = content["measured"]
        log.info("%s: neuron diameter %.2f px (half maximum; %d of %d candidates), gSig used %s",
                 smk.wildcards.animal, m["diameter"], m["n_accepted"], m["n_candidates"], content["gSig"])
        for w in content["warnings"]:
            log.warning("%s: %s", smk.wildcards.animal, w)
        write_neuron_size(smk.output[0], content)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
