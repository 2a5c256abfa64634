#!/usr/bin/env bash
# Runs every kess test on a fresh machine: installs what the tests need, then runs them.
# This is the README's test command, and what CI runs (.ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# The local-peer tests build a pod network (a network namespace, veths, bridges) with iproute2;
# they need root, and say so and pass without it.
if ! command -v ip >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq </dev/null >&2
  apt-get install -y -qq --no-install-recommends iproute2 </dev/null >&2
fi

# Real-Spark end-to-end tests need PySpark 3.5.7 (a venv under target/) and Java 17;
# setup.sh installs both when missing and is quick when already set up.
bash tests/spark/setup.sh >/dev/null

cargo test --all-targets --locked
