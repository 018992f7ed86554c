#!/usr/bin/env bash
# TPU VM pod slice: the same command on every worker; jax.distributed.initialize()
# discovers the pod from the TPU environment (jaxsr.parallel).
# Usage: launch/tpu_vm_pod.sh TPU_NAME ZONE CONFIG WORKDIR DATA [--config.KEY=VALUE ...]
# Expects: the repo checked out at ~/jaxsr on every worker with `pip install -e '.[tpu]'`,
# and WORKDIR/DATA on storage every worker can read (e.g. a gs:// bucket mounted with gcsfuse).
set -euo pipefail
tpu=$1 zone=$2 config=$3 workdir=$4 data=$5; shift 5
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/jaxsr && .venv/bin/jaxsr train --no-progress --config $config --workdir $workdir --data $data $*"
