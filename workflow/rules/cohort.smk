# Per animal (fan-in over its sessions): inter-session alignment, then concatenation of the
# enhanced movies into one aligned movie. Uses animal_sessions / session_paths / group_params
# from common.smk; per-session inputs come from the session rules (projections, enhanced).


rule align_sessions:
    input:
        projections=session_paths(
            "results/{animal}/sessions/{session}/projections.zarr"
        ),
        neuron_size=NEURON_SIZE,
    output:
        alignment=directory("results/{animal}/alignment.zarr"),
        qc_before=report(
            "results/{animal}/qc/alignment_before.png",
            caption="../report/alignment.rst",
            category="2. Alignment",
            labels={"animal": "{animal}", "stage": "before"},
        ),
        qc_after=report(
            "results/{animal}/qc/alignment_after.png",
            caption="../report/alignment.rst",
            category="2. Alignment",
            labels={"animal": "{animal}", "stage": "after"},
        ),
    params:
        sessions=animal_sessions,
        config=group_params("inter_session_alignment", "general"),
    log:
        "logs/{animal}/align_sessions.log",
    benchmark:
        "logs/{animal}/align_sessions.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/align_sessions.py"


rule concatenate:
    input:
        enhanced=session_paths("results/{animal}/sessions/{session}/enhanced.zarr"),
        projections=session_paths(
            "results/{animal}/sessions/{session}/projections.zarr"
        ),
        alignment="results/{animal}/alignment.zarr",
        neuron_size=NEURON_SIZE,
    output:
        directory("results/{animal}/aligned.zarr"),
    params:
        sessions=animal_sessions,
        config=group_params("inter_session_alignment", "concatenation", "general"),
    log:
        "logs/{animal}/concatenate.log",
    benchmark:
        "logs/{animal}/concatenate.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/concatenate.py"


ANIMAL_TARGETS.extend(
    [
        "results/{animal}/aligned.zarr",
        "results/{animal}/qc/alignment_before.png",
        "results/{animal}/qc/alignment_after.png",
    ]
)
