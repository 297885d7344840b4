# Per animal, before the session chain: the neuron size measured from a sample of every
# session's raw recording -> results/{animal}/neuron_size.json. It sets gSig when
# general.gSig is 'auto' and the floor under a manual gSig (califlow.sizes); every job that
# derives a size from gSig reads it. Library: califlow.neuron_size_step.


rule neuron_size:
    input:
        animal_sources,
    output:
        "results/{animal}/neuron_size.json",
    params:
        sessions=animal_sessions,
        fps=animal_fps,
        # only what the measurement uses: other settings do not rerun it (and all that follows)
        config={
            "general": {k: CFG["general"][k] for k in ("gSig", "neuron_diameter", "sf")},
            "downsampling": CFG["downsampling"],
            "preprocessing": {"detrend": CFG["preprocessing"]["detrend"]},
        },
    log:
        "logs/{animal}/neuron_size.log",
    benchmark:
        "logs/{animal}/neuron_size.benchmark.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/neuron_size.py"


ANIMAL_TARGETS.append("results/{animal}/neuron_size.json")
