#!/usr/bin/env bash
# The README's first command on a fresh checkout, with the plain install (no test extra):
# the demo cohort end to end, then the report (`snakemake --report` needs only what
# `pip install -e .` brings, e.g. pygments). Runs in a clean copy of the committed tree.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive --format=tar HEAD | tar -x -C "$work"
cd "$work"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
if python -c "import pytest" 2> /dev/null; then
  echo "readme quickstart: the plain install brought the test extra's pytest; not a plain venv" >&2
  exit 1
fi
snakemake --cores all > demo.log 2>&1 || { tail -n 40 demo.log; exit 1; }
snakemake --report report.html > report.log 2>&1 || { tail -n 40 report.log; exit 1; }
test -s report.html
echo "== README quick start: demo and report OK (report.html $(du -h report.html | cut -f1))"
