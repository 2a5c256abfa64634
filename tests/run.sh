#!/usr/bin/env bash
# Runs every kess test on a fresh machine: installs what the tests need, then runs them.
# This is the README's test command, and what CI runs (.ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

cargo test --all-targets --locked
