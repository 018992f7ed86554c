#!/usr/bin/env bash
# One `jaxsr reprocess` per visible GPU on this machine, each on its own shard (as nnU-Net's
# --num_parts/--part_id): process I of N sees only GPU I and takes the files i with i % N == I.
#
#   launch/local_reprocess.sh [--dry-run] [--gpus 0,1,...] IN_DIR OUT_DIR --checkpoint DIR (--factor K | --spacing MM) [...]
#
# GPUs: --gpus, else CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists; none: one process.
# --dry-run prints the N commands and starts nothing. Flags after OUT_DIR go to every process.
# Each process writes its own manifest (OUT_DIR/.jaxsr/manifest-shard-I-of-N.jsonl) and log
# (OUT_DIR/.jaxsr/logs/shard-I-of-N.log). Rerunning the same command resumes every shard.
# Exit code: the worst of the shards' (1 if any file failed); `jaxsr status` is printed last.
# Expects: `pip install -e '.[cuda]'` in .venv (or JAXSR=/path/to/jaxsr).
set -euo pipefail
dry_run=0 gpus=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --gpus) gpus=$2; shift 2 ;;
    --gpus=*) gpus=${1#--gpus=}; shift ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "usage: $0 [--dry-run] [--gpus LIST] IN_DIR OUT_DIR --checkpoint DIR (--factor K | --spacing MM) [...]" >&2
  exit 2
fi
in_dir=$1 out_dir=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
jaxsr=${JAXSR:-$repo/.venv/bin/jaxsr}

if [ -z "$gpus" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    gpus=$CUDA_VISIBLE_DEVICES
  elif command -v nvidia-smi > /dev/null 2>&1; then
    gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null | paste -sd, - || true)
  fi
fi
gpu_list=()
[ -n "$gpus" ] && IFS=',' read -r -a gpu_list <<< "$gpus"
n=${#gpu_list[@]}
if [ "$n" -eq 0 ]; then
  echo "$0: no GPU visible; running one process" >&2
  n=1
fi

logs=$out_dir/.jaxsr/logs
[ "$dry_run" -eq 1 ] || mkdir -p "$logs"
pids=()
trap 'kill "${pids[@]}" 2> /dev/null || true' INT TERM
for ((i = 0; i < n; i++)); do
  cmd=("$jaxsr" reprocess "$in_dir" "$out_dir" --shard "$i/$n" --no-progress "$@")
  [ "${#gpu_list[@]}" -gt 0 ] && cmd=(env "CUDA_VISIBLE_DEVICES=${gpu_list[$i]}" "${cmd[@]}")
  if [ "$dry_run" -eq 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
  else
    "${cmd[@]}" > "$logs/shard-$i-of-$n.log" 2>&1 &
    pids+=($!)
  fi
done
[ "$dry_run" -eq 1 ] && exit 0

worst=0
for ((i = 0; i < n; i++)); do
  code=0
  wait "${pids[$i]}" || code=$?
  echo "shard $i/$n exited $code (log: $logs/shard-$i-of-$n.log)"
  [ "$code" -gt "$worst" ] && worst=$code
done
"$jaxsr" status "$out_dir" --input "$in_dir" || true
exit "$worst"
