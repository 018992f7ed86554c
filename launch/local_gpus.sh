#!/usr/bin/env bash
# Single host, all local GPUs: one process sees every GPU; the 'data' mesh spans them.
# Usage: launch/local_gpus.sh CONFIG WORKDIR DATA [--config.KEY=VALUE ...]
# Expects: `pip install -e '.[cuda]'` in .venv. Rerunning the same command resumes.
set -euo pipefail
config=$1 workdir=$2 data=$3; shift 3
cd "$(dirname "$0")/.."
exec .venv/bin/jaxsr train --config "$config" --workdir "$workdir" --data "$data" "$@"
