#!/bin/bash
# tpcflow submit as a PBS Pro array job over a file list: index N sends line N+1 of $FILE_LIST and
# writes <OUT_DIR>/<input name>_pred.h5, with the local fallback when the broker cannot be reached.
#
#   qsub -A myproj -q prod -J 0-9 deploy/pbs/client.sh
#
#PBS -N tpcflow-client
#PBS -J 0-9
#PBS -l select=1:ncpus=2
#PBS -l walltime=04:00:00
#PBS -j oe

# ---- site settings: edit here, or pass them with qsub -v ----------------------------------------
IMAGE=${IMAGE:-}
RUN_DIR=${RUN_DIR:-${PBS_O_WORKDIR:-$PWD}/tpcflow-run}
FILE_LIST=${FILE_LIST:-${PBS_O_WORKDIR:-$PWD}/files.txt}
OUT_DIR=${OUT_DIR:-${PBS_O_WORKDIR:-$PWD}/predictions}
MODEL=${MODEL:-${PBS_O_WORKDIR:-$PWD}/cosmic_tagger.ckpt}
SERVICE=${SERVICE:-cosmic_tagger}
TIMEOUT=${TIMEOUT:-120}
# ---------------------------------------------------------------------------------------------------
set -euo pipefail
cd "${PBS_O_WORKDIR:-$PWD}"

run() {
    if [[ -n "$IMAGE" ]]; then apptainer exec "$IMAGE" "$@"; else "$@"; fi
}

task=${PBS_ARRAY_INDEX:-0}
input=$(sed -n "$((task + 1))p" "$FILE_LIST")
if [[ -z "$input" ]]; then
    echo "task $task: $FILE_LIST has no line $((task + 1))" >&2
    exit 1
fi
name=$(basename "$input")
mkdir -p "$OUT_DIR"
broker=tcp://127.0.0.1:1
[[ -s "$RUN_DIR/broker.address" ]] && broker=$(<"$RUN_DIR/broker.address")
run tpcflow submit "$input" -o "$OUT_DIR/${name%.*}_pred.h5" --broker "$broker" --service "$SERVICE" \
    --timeout "$TIMEOUT" --retries 1 --fallback local --model "$MODEL" --device cpu --no-progress
