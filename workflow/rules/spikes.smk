# Per animal: spike extraction (OASIS deconvolution) of the CNMF-E raw traces, per session.
# Outputs in results/{animal}/spikes/: {session}.deconv.zarr (C, S), {session}.events.csv and
# {session}.params.csv (see califlow.deconv.tool).


rule spike_extraction:
    input:
        "results/{animal}/cnmfe.zarr",
    output:
        directory("results/{animal}/spikes"),
    params:
        spike_extraction=CFG["spike_extraction"],
    log:
        "logs/{animal}/spike_extraction.log",
    benchmark:
        "logs/{animal}/spike_extraction.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/spike_extraction.py"


ANIMAL_TARGETS.append("results/{animal}/spikes")
