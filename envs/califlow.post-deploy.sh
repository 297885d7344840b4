#!/usr/bin/env bash
# Installs califlow itself into the conda environment of envs/califlow.yaml (whose pip list
# holds the pinned third-party packages only).
#
# Snakemake (9.x, snakemake/deployment/conda.py) runs this after creating the environment: it
# copies this file to <conda-prefix>/<hash>.post-deploy.sh (default .snakemake/conda/) and runs
# it there, with the environment activated and the working directory of the Snakemake run as
# the current directory. Neither $0 nor any Snakemake variable points back to this repository,
# so the source folder is, in this order:
#   1. $CALIFLOW_SOURCE_DIR, when set (the workflow can set it to its own folder);
#   2. the first of the current directory and its parents holding califlow's pyproject.toml
#      (running from the repository, or with --directory inside it, e.g. .test).
# The install is editable: jobs run the repository's current code, as from the venv.
set -euo pipefail

is_califlow_source() {
    [ -f "$1/pyproject.toml" ] && grep -q '^name = "califlow"' "$1/pyproject.toml"
}

src="${CALIFLOW_SOURCE_DIR:-}"
if [ -n "$src" ]; then
    if ! is_califlow_source "$src"; then
        echo "califlow post-deploy: CALIFLOW_SOURCE_DIR=$src holds no califlow pyproject.toml" >&2
        exit 1
    fi
else
    dir="$PWD"
    while :; do
        if is_califlow_source "$dir"; then
            src="$dir"
            break
        fi
        [ "$dir" = "/" ] && break
        dir="$(dirname "$dir")"
    done
    if [ -z "$src" ]; then
        echo "califlow post-deploy: the califlow source was not found in $PWD or above;" \
            "set CALIFLOW_SOURCE_DIR to the repository (the folder holding pyproject.toml)" >&2
        exit 1
    fi
fi

echo "califlow post-deploy: installing califlow from $src"
# --no-deps: the environment's pins (envs/califlow.yaml) are the dependencies; nothing else moves.
python -m pip install --no-deps --editable "$src"
python -c "import califlow; print('califlow', califlow.__version__, 'from', califlow.__file__)"
