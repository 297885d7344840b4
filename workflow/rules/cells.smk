# Per animal: the evidence for every tracked cell and its curation (cells.csv), and the cell
# browser (cells.html). A manual curation table (curation.manual, e.g. curation/m1.csv) is an
# input when it exists: editing it reruns cell_qc and the exports, never CNMF-E.

rule cell_qc:
    input:
        cnmfe="results/{animal}/cnmfe.zarr",
        aligned="results/{animal}/aligned.zarr",
        neuron_size=NEURON_SIZE,
        manual=manual_curation,
    output:
        "results/{animal}/cells.csv",
    params:
        # only what cell_qc reads: another export or CNMF-E setting must not rerun it
        config={
            "curation": CFG["curation"],
            "general": CFG["general"],
            "cnmfe": {"bv_threshold": CFG["cnmfe"]["bv_threshold"]},
            "export": {"event_threshold": CFG["export"]["event_threshold"]},
        },
    log:
        "logs/{animal}/cell_qc.log",
    benchmark:
        "logs/{animal}/cell_qc.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/cell_qc.py"


rule cell_browser:
    input:
        cnmfe="results/{animal}/cnmfe.zarr",
        cells="results/{animal}/cells.csv",
        aligned="results/{animal}/aligned.zarr",
    output:
        report(
            "results/{animal}/cells.html",
            caption="../report/cells.rst",
            category="3. Cells",
            labels={"animal": "{animal}", "figure": "cell browser"},
        ),
    log:
        "logs/{animal}/cell_browser.log",
    benchmark:
        "logs/{animal}/cell_browser.benchmark.tsv"
    conda:
        "../../envs/califlow.yaml"
    script:
        "../../scripts/cell_browser.py"


ANIMAL_TARGETS.extend(["results/{animal}/cells.csv", "results/{animal}/cells.html"])
