# Per session: read the recording, downsample, write a chunked Zarr movie.


rule simulate_demo_session:
    output:
        directory(f"{DEMO_DIR}/{{animal}}/{{session}}"),
    params:
        demo=CFG["demo"],
        animal_index=demo_animal_index,
        sessions=animal_sessions,
    log:
        "logs/{animal}/{session}/simulate_demo.log",
    benchmark:
        "logs/{animal}/{session}/simulate_demo.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/simulate_demo.py"


rule simulate_demo_truth:
    output:
        directory(f"{DEMO_DIR}/{{animal}}/ground_truth.zarr"),
    params:
        demo=CFG["demo"],
        animal_index=demo_animal_index,
        sessions=animal_sessions,
    log:
        "logs/{animal}/simulate_demo_truth.log",
    benchmark:
        "logs/{animal}/simulate_demo_truth.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/simulate_demo.py"


rule ingest:
    input:
        session_source,
    output:
        store=maybe_temp(directory("results/{animal}/sessions/{session}/ingest.zarr")),
        summary="results/{animal}/sessions/{session}/ingest.json",
    params:
        downsampling=CFG["downsampling"],
        fps=session_fps,
        default_fps=CFG["general"]["sf"],
    log:
        "logs/{animal}/{session}/ingest.log",
    benchmark:
        "logs/{animal}/{session}/ingest.benchmark.tsv"
    group:
        "session"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/ingest.py"
