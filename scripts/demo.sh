#!/usr/bin/env bash
# Installs PoA Stream into .venv and runs the main job: `poa demo` on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/poa demo "$@"
