#!/usr/bin/env bash
# Sets up a fresh checkout: a virtualenv in .venv with the pinned tools, the
# release wheel built into dist/, and that wheel installed into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustc python3; do
    command -v "$tool" >/dev/null || { echo "setup: $tool is required but not installed" >&2; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt

rm -rf dist
.venv/bin/maturin build --release --out dist
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps dist/openmatch_persistence-*.whl
echo "setup: installed $(ls dist/*.whl) into .venv"
