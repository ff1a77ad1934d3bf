#!/usr/bin/env bash
# The whole test suite: formatting and lints, Rust tests, Python tests.
# Run after scripts/setup.sh. PostgreSQL must be reachable at DATABASE_URL
# (default postgresql://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check";        cargo fmt --all --check
step "cargo clippy";             cargo clippy --workspace --all-targets -- -D warnings
step "cargo test";               cargo test --workspace
step "ruff";                     ruff check python tests benches && ruff format --check python tests benches
step "mypy --strict";            mypy python tests
step "stubtest";                 python -m mypy.stubtest openmatch_persistence._core --allowlist scripts/stubtest-allowlist.txt
step "pytest";                   python -m pytest tests "$@"
step "mutation sample";          bash scripts/mutants.sh sample-python
