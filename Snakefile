# califlow: cross-session one-photon calcium imaging as a Snakemake workflow.
#   snakemake --cores all                      # the built-in demo cohort (config/config.yaml)
#   snakemake --cores all --configfile my.yaml # your cohort (see README.md)
from snakemake.utils import min_version

min_version("9.27")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    animal=ANIMAL_PATTERN,
    session=SESSION_PATTERN,


include: "workflow/rules/ingest.smk"
include: "workflow/rules/neuron_size.smk"
include: "workflow/rules/session.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/cells.smk"
include: "workflow/rules/spikes.smk"
include: "workflow/rules/export.smk"


# Warnings the jobs recorded (gSig far from the data, collapsed extraction, silent sessions):
# on the report's front page, and on the console when the run ends.
from califlow.run_warnings import collect_warnings

config["califlow_warnings"] = collect_warnings("results", ANIMALS)


onsuccess:
    for w in collect_warnings("results", ANIMALS):
        print(f"califlow WARNING: {w}")


onerror:
    for w in collect_warnings("results", ANIMALS):
        print(f"califlow WARNING: {w}")


rule all:
    input:
        final_outputs(),
    default_target: True
