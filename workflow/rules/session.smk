# Per session, after ingest: motion correction (rigid on blood vessels or neurons, optional
# non-rigid), then detrend / noise scaling / MIN1PIPE enhancement and the session projections
# (mean, bv, cn, pnr). Both rules belong to group "session" so a cluster runs one session's
# chain (ingest -> motion_correct -> enhance) as one job. Library: califlow.motion.session.


rule motion_correct:
    input:
        ingest="results/{animal}/sessions/{session}/ingest.zarr",
        neuron_size=NEURON_SIZE,
    output:
        table="results/{animal}/sessions/{session}/motion.csv",
        store=directory("results/{animal}/sessions/{session}/motion.zarr"),
    params:
        # only chunk_frames of preprocessing: a new detrend/noise setting reruns enhance only
        config={
            **group_params("general", "downsampling", "motion_correction"),
            "preprocessing": {"chunk_frames": CFG["preprocessing"]["chunk_frames"]},
        },
    log:
        "logs/{animal}/{session}/motion_correct.log",
    benchmark:
        "logs/{animal}/{session}/motion_correct.benchmark.tsv"
    group:
        "session"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/motion_correct.py"


rule enhance:
    input:
        ingest="results/{animal}/sessions/{session}/ingest.zarr",
        motion="results/{animal}/sessions/{session}/motion.zarr",
        neuron_size=NEURON_SIZE,
    output:
        enhanced=maybe_temp(directory("results/{animal}/sessions/{session}/enhanced.zarr")),
        projections=directory("results/{animal}/sessions/{session}/projections.zarr"),
    params:
        config=group_params("general", "downsampling", "preprocessing"),
    log:
        "logs/{animal}/{session}/enhance.log",
    benchmark:
        "logs/{animal}/{session}/enhance.benchmark.tsv"
    group:
        "session"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/enhance.py"


SESSION_TARGETS.extend(
    [
        "results/{animal}/sessions/{session}/motion.csv",
        "results/{animal}/sessions/{session}/projections.zarr",
    ]
)
