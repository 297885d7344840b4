"""Snakemake script of rule ``ingest``: recording -> ingest.zarr (+ ingest.json summary).

Reads ``snakemake.input[0]`` (file or chunk folder), ``snakemake.params.downsampling``
(spatial_ds, temporal_ds, file_extension), ``snakemake.params.fps`` (sheet, may be None) and
``snakemake.params.default_fps`` (config ``general.sf``); writes the store
``snakemake.output.store`` and a JSON summary ``snakemake.output.summary`` (source files,
frames per file, frame rate, dropped frames: kept after the temporary store is deleted);
logs progress (frames done, rate, ETA) to ``snakemake.log[0]``.
"""

import json

from califlow.io.ingest import ingest
from califlow.io.store import atomic_output
from califlow.job import workflow_job


def main(smk) -> None:
    ds = dict(smk.params.downsampling)
    params = {"downsampling": ds, "fps": smk.params.fps, "default_fps": smk.params.default_fps}
    attrs = ingest(smk.input[0], smk.output.store, spatial_ds=int(ds["spatial_ds"]),
                   temporal_ds=int(ds["temporal_ds"]), file_extension=str(ds["file_extension"]),
                   fps=smk.params.fps, default_fps=smk.params.default_fps, params=params)
    with atomic_output(smk.output.summary) as tmp:
        tmp.write_text(json.dumps(attrs, indent=1))


with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    main(snakemake)  # noqa: F821
