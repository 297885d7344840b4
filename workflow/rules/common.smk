# Sessions sheet, configuration, wildcard constraints and input functions.
# Everything here is cheap: every cluster job re-imports it.

import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

from califlow.cohort_check import check_animals
from califlow.disk_budget import budget_lines
from califlow.host import physical_memory_gb
from califlow.params import resolve_config
from califlow.sessions import read_sessions, sessions_from_files, subject_of, validate_sessions


# envs/califlow.post-deploy.sh installs califlow from here when Snakemake deploys the conda env
os.environ.setdefault("CALIFLOW_SOURCE_DIR", str(Path(workflow.basedir)))

# ---- configuration: validated (with defaults filled in) before any job runs -------------
CFG = resolve_config(config)  # readable errors: names the key, the value and what is allowed
validate(config, schema="../schemas/config.schema.yaml")  # fills Snakemake's config defaults
DEMO_DIR = CFG["demo"]["directory"]


def _load_sessions():
    demo = [DEMO_DIR] if CFG["demo"]["enabled"] else []
    ext = CFG["downsampling"]["file_extension"]
    sheet_path = Path(CFG["sessions"])
    if sheet_path.exists():
        return read_sessions(sheet_path, may_be_missing=demo, file_extension=ext)
    if CFG["general"]["input_files"]:
        table = sessions_from_files(
            CFG["general"]["input_files"], CFG["general"]["output_files"]
        )
        return validate_sessions(table, source="general.input_files", file_extension=ext)
    return read_sessions(sheet_path)  # raises: names the missing sheet


SESSIONS = _load_sessions()
validate(SESSIONS.reset_index(drop=True), schema="../schemas/sessions.schema.yaml")
ANIMALS = list(dict.fromkeys(SESSIONS["animal"]))
if workflow.is_main_process:  # not in every cluster job: opens each recording's headers
    PROBES = check_animals(SESSIONS, CFG)  # frame rate and size agree within each animal
    DISK_LINES, DISK_WARNING = budget_lines(
        PROBES,
        ANIMALS,
        keep_intermediates=CFG["keep_intermediates"],
        aligned_dtype=CFG["concatenation"]["dtype"],
    )
    print("\n".join(DISK_LINES), file=sys.stderr)  # stderr: `snakemake --dag | dot` stays clean
    if DISK_WARNING:
        print(f"califlow WARNING: {DISK_WARNING}", file=sys.stderr)
ANIMAL_PATTERN = "|".join(map(re.escape, ANIMALS))
SESSION_PATTERN = "|".join(map(re.escape, dict.fromkeys(SESSIONS["session"])))


# ---- helpers used by the rule files ------------------------------------------------------
def maybe_temp(path):
    """temp() unless keep_intermediates is set."""
    return path if CFG["keep_intermediates"] else temp(path)


def session_row(wildcards):
    return SESSIONS.loc[(wildcards.animal, wildcards.session)]


def session_source(wildcards):
    """The recording (file or folder) of a session, as written in the sheet."""
    return session_row(wildcards)["path"]


def session_fps(wildcards):
    """Frame rate from the sheet, or None (then timestamps, the file, or general.sf)."""
    fps = session_row(wildcards)["fps"]
    return None if fps != fps else float(fps)


def animal_subject(wildcards):
    """The animal's NWB Subject columns from the sheet (subject_id, species, sex, age, genotype)."""
    return subject_of(SESSIONS, wildcards.animal)


def animal_sessions(wildcards):
    """Session names of an animal, in concatenation order."""
    return list(SESSIONS.loc[wildcards.animal]["session"])


def animal_sources(wildcards):
    """The recordings of every session of the animal, in concatenation order."""
    return list(SESSIONS.loc[wildcards.animal]["path"])


def animal_fps(wildcards):
    """Sheet frame rate of every session of the animal (None where absent)."""
    return [None if f != f else float(f) for f in SESSIONS.loc[wildcards.animal]["fps"]]


def sessions_sheet_rows():
    """The sessions sheet as a list of rows (for the report's configuration page)."""
    cols = [c for c in SESSIONS.columns if c != "order" and SESSIONS[c].notna().any()]
    table = SESSIONS[cols].astype(object).where(SESSIONS[cols].notna(), None)
    return table.to_dict("records")


NEURON_SIZE = "results/{animal}/neuron_size.json"


def session_paths(pattern):
    """Input function: ``pattern`` (with {animal} and {session}) for every session of the animal."""

    def inner(wildcards):
        return [
            pattern.format(animal=wildcards.animal, session=s)
            for s in animal_sessions(wildcards)
        ]

    return inner


def manual_curation(wildcards):
    """The animal's manual curation table (curation.manual) when the user has written one."""
    from califlow.cells_step import manual_path

    path = manual_path(CFG, wildcards.animal)
    return [str(path)] if path.exists() else []


def group_params(*groups):
    """The resolved parameters of the named config groups (reach rules through params:)."""
    return {g: CFG[g] for g in groups}


def is_demo_path(path):
    try:
        Path(path).resolve().relative_to(Path(DEMO_DIR).resolve())
        return CFG["demo"]["enabled"]
    except ValueError:
        return False


DEMO_ANIMALS = sorted(
    {a for a, p in zip(SESSIONS["animal"], SESSIONS["path"]) if is_demo_path(p)}
)


def demo_session_dirs(wildcards):
    return [
        f"{DEMO_DIR}/{wildcards.animal}/{s}" for s in animal_sessions(wildcards)
    ]


def cnmfe_mem_mb(wildcards, attempt):
    """Memory request of CNMF-E jobs (MB): memory_size_to_use plus 1 GB of overhead per attempt.

    With memory_size_to_use left empty, a local run asks for 90 % of this machine's memory
    and a cluster job for 4 GB per attempt; the job then plans for what it was given
    (califlow.host.memory_budget_gb). Resources never trigger a rerun; params would.
    """
    budget = config["cnmfe"].get("memory_size_to_use")
    if budget is not None:
        return int(1000 * float(budget)) + 1000 * attempt
    if workflow.local_exec:
        return int(0.9 * physical_memory_gb() * 1000)
    return 4000 * attempt


def cnmfe_patch_mem_mb(wildcards, input, attempt):
    """Memory request of a CNMF-E scatter job (MB): what its patches need by the plan
    (califlow.cnmfe.pipeline.patch_job_memory_bytes, from aligned.zarr's shape and
    sessions) plus 1 GB per attempt, and never more than cnmfe_mem_mb."""
    from califlow.cnmfe.pipeline import patch_job_memory_bytes

    n_jobs = int(CFG["cnmfe"]["patch_jobs"])
    need = patch_job_memory_bytes(input.aligned, CFG, int(wildcards.job), n_jobs)
    return min(cnmfe_mem_mb(wildcards, attempt), -(-need // 10**6) + 1000 * attempt)


def final_outputs():
    """Targets of the default target: what the stages built so far deliver per session and animal."""
    targets = []
    for animal, session in SESSIONS.index:
        for name in SESSION_TARGETS:
            targets.append(name.format(animal=animal, session=session))
    for animal in ANIMALS:
        for name in ANIMAL_TARGETS:
            targets.append(name.format(animal=animal))
    targets += COHORT_TARGETS
    # the demo cohort's ground truth, to score the results against
    targets += [f"{DEMO_DIR}/{animal}/ground_truth.zarr" for animal in DEMO_ANIMALS]
    return targets


# Rule files append the outputs they deliver to these lists.
SESSION_TARGETS = []
ANIMAL_TARGETS = []
COHORT_TARGETS = []  # once per run (no wildcards), e.g. the report's configuration page


def demo_animal_index(wildcards):
    """Position of a demo animal (its simulation seed is derived from it)."""
    return DEMO_ANIMALS.index(wildcards.animal)
