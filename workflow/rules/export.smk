# Per session and per animal: tables, NWB and Inscopix exports, QC figures for the report; once per
# run: the report's configuration page.


rule events_table:
    input:
        cnmfe="results/{animal}/cnmfe.zarr",
        cells="results/{animal}/cells.csv",
    output:
        "results/{animal}/events.csv",
    params:
        threshold=CFG["export"]["event_threshold"],
    log:
        "logs/{animal}/events_table.log",
    benchmark:
        "logs/{animal}/events_table.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/events_table.py"


rule export_session:
    input:
        cnmfe="results/{animal}/cnmfe.zarr",
        cells="results/{animal}/cells.csv",
        aligned="results/{animal}/aligned.zarr",
        summary="results/{animal}/sessions/{session}/ingest.json",
    output:
        directory("results/{animal}/sessions/{session}/export"),
    params:
        export=CFG["export"],
        subject=animal_subject,
    log:
        "logs/{animal}/{session}/export_session.log",
    benchmark:
        "logs/{animal}/{session}/export_session.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/export_session.py"


rule qc_seeds:
    input:
        aligned="results/{animal}/aligned.zarr",
        neuron_size=NEURON_SIZE,
    output:
        report(
            "results/{animal}/qc/seeds.png",
            caption="../report/seeds.rst",
            category="3. Cells",
            labels={"animal": "{animal}", "figure": "seeding"},
        ),
    params:
        config=group_params("cnmfe", "general"),
    log:
        "logs/{animal}/qc_seeds.log",
    benchmark:
        "logs/{animal}/qc_seeds.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/qc_seeds.py"


rule qc_session:
    input:
        motion="results/{animal}/sessions/{session}/motion.csv",
        projections="results/{animal}/sessions/{session}/projections.zarr",
        summary="results/{animal}/sessions/{session}/ingest.json",
    output:
        report(
            "results/{animal}/qc/session_{session}.png",
            caption="../report/session.rst",
            category="1. Sessions",
            subcategory="{animal}",
            labels={"animal": "{animal}", "session": "{session}"},
        ),
    log:
        "logs/{animal}/{session}/qc_session.log",
    benchmark:
        "logs/{animal}/{session}/qc_session.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/qc_session.py"


rule qc_animal:
    input:
        cnmfe="results/{animal}/cnmfe.zarr",
        aligned="results/{animal}/aligned.zarr",
    params:
        threshold=CFG["export"]["event_threshold"],
    output:
        footprints=report(
            "results/{animal}/qc/footprints.png",
            caption="../report/footprints.rst",
            category="3. Cells",
            labels={"animal": "{animal}", "figure": "footprints"},
        ),
        traces=report(
            "results/{animal}/qc/traces.png",
            caption="../report/traces.rst",
            category="3. Cells",
            labels={"animal": "{animal}", "figure": "traces"},
        ),
        raster=report(
            "results/{animal}/qc/raster.png",
            caption="../report/raster.rst",
            category="3. Cells",
            labels={"animal": "{animal}", "figure": "raster"},
        ),
        presence=report(
            "results/{animal}/qc/presence.png",
            caption="../report/presence.rst",
            category="3. Cells",
            labels={"animal": "{animal}", "figure": "presence"},
        ),
    log:
        "logs/{animal}/qc_animal.log",
    benchmark:
        "logs/{animal}/qc_animal.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/qc_animal.py"


SESSION_TARGETS.extend(
    [
        "results/{animal}/sessions/{session}/export",
        "results/{animal}/qc/session_{session}.png",
    ]
)
ANIMAL_TARGETS.extend(
    [
        "results/{animal}/events.csv",
        "results/{animal}/qc/footprints.png",
        "results/{animal}/qc/seeds.png",
    ]
)


rule report_configuration:
    localrule: True
    output:
        report(
            "results/configuration.html",
            caption="../report/configuration.rst",
            category="4. Configuration",
            labels={"page": "configuration"},
        ),
    params:
        config=CFG,
        sessions=sessions_sheet_rows(),
    log:
        "logs/report_configuration.log",
    benchmark:
        "logs/report_configuration.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/report_configuration.py"


COHORT_TARGETS.append("results/configuration.html")
