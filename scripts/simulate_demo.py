"""Simulate one session (or the ground truth) of an animal of the built-in demo cohort."""

import os
import shutil
import tempfile
from pathlib import Path

from califlow.job import workflow_job
from califlow.simulate import animal_seed, preset, save_ground_truth, simulate_animal, write_animal


def main(snakemake):
    demo = snakemake.params.demo
    sessions = list(snakemake.params.sessions)
    # parametric footprints: the demo must be identical on every machine
    config = preset(demo["preset"], n_sessions=len(sessions), footprint_source="gaussian")
    animal = simulate_animal(config, animal_seed(demo["seed"], snakemake.params.animal_index))
    out = Path(snakemake.output[0])
    if out.name == "ground_truth.zarr":
        save_ground_truth(animal.ground_truth, out)
        return
    index = sessions.index(snakemake.wildcards.session)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".demo-") as tmp:
        (written,) = write_animal(animal, tmp, format="miniscope", sessions=[index])
        if out.exists():
            shutil.rmtree(out)
        os.replace(written, out)


with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    main(snakemake)  # noqa: F821
