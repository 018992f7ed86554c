#!/usr/bin/env bash
# The train suite on a lent GPU, in one command; JSON and logs under $OUT.
#
#   OUT=/tmp/out bash benchmarks/gpu_run.sh                      # defaults: fp32 and bf16, batches 16..512
#   OUT=/tmp/out bash benchmarks/gpu_run.sh --dtypes bfloat16    # extra arguments go to benchmarks.run
#
# Python: $PYTHON if set, else .venv-gpu (made here). jax with CUDA is installed
# with `pip install -e '.[cuda,peer]'` unless jax already sees a GPU; on a machine
# without internet point WHEELS at a folder of wheels (pip --no-index --find-links).
# Without PyTorch the suite records the torch peer as skipped and still times
# jaxsr and the plain-JAX twin. XLA_VARIANTS (';'-separated XLA_FLAGS strings)
# adds one jaxsr-only bf16 run per variant, for the "XLA flags tried" column.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
stamp=$(date -u +%Y-%m-%d)

if [ -z "${PYTHON:-}" ]; then
  [ -x .venv-gpu/bin/python ] || python3 -m venv .venv-gpu
  PYTHON=.venv-gpu/bin/python
fi
if ! "$PYTHON" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  pip_args=(--quiet)
  [ -n "${WHEELS:-}" ] && pip_args+=(--no-index --find-links "$WHEELS")
  "$PYTHON" -m pip install "${pip_args[@]}" -e '.[cuda,peer]' || "$PYTHON" -m pip install "${pip_args[@]}" -e '.[cuda]'
fi
"$PYTHON" -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())' | tee "$OUT/devices.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" || true

"$PYTHON" -m benchmarks.run --suite train -v --out "$OUT/gpu-train-$stamp.json" "$@" 2>&1 | tee "$OUT/gpu-train-$stamp.txt"

IFS=';' read -r -a variants <<< "${XLA_VARIANTS:-}"
for i in "${!variants[@]}"; do
  XLA_FLAGS="${variants[$i]}" "$PYTHON" -m benchmarks.run --suite train --no-peer --dtypes bfloat16 --loop-steps 0 \
    --out "$OUT/gpu-train-$stamp-xla$i.json" 2>&1 | tee "$OUT/gpu-train-$stamp-xla$i.txt"
  echo "xla$i: ${variants[$i]}" >> "$OUT/xla_variants.txt"
done
