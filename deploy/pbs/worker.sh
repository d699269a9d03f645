#!/bin/bash
# tpcflow GPU workers as a PBS Pro array job: one worker per GPU (array index = GPU job), serving
# $MODEL to the broker whose address the broker job wrote to $RUN_DIR/broker.address.
#
#   qsub -A myproj -q prod -J 0-3 deploy/pbs/worker.sh
#
#PBS -N tpcflow-worker
#PBS -J 0-3
#PBS -l select=1:ncpus=8:ngpus=1
#PBS -l walltime=24:00:00
#PBS -j oe

# ---- site settings: edit here, or pass them with qsub -v ----------------------------------------
IMAGE=${IMAGE:-}                          # tpcflow.sif built with VARIANT=cuda; empty: tpcflow from PATH
RUN_DIR=${RUN_DIR:-${PBS_O_WORKDIR:-$PWD}/tpcflow-run}
MODEL=${MODEL:-${PBS_O_WORKDIR:-$PWD}/cosmic_tagger.ckpt}
SERVICE=${SERVICE:-cosmic_tagger}
DEVICE=${DEVICE:-cuda}
MAX_BATCH=${MAX_BATCH:-4}
WAIT_S=${WAIT_S:-600}
# ---------------------------------------------------------------------------------------------------
set -euo pipefail
cd "${PBS_O_WORKDIR:-$PWD}"

run() {
    if [[ -n "$IMAGE" ]]; then apptainer exec --nv "$IMAGE" "$@"; else "$@"; fi
}

for ((i = 0; i < WAIT_S; i++)); do
    [[ -s "$RUN_DIR/broker.address" ]] && break
    sleep 1
done
if [[ ! -s "$RUN_DIR/broker.address" ]]; then
    echo "no broker address in $RUN_DIR/broker.address after $WAIT_S s: is the broker job running?" >&2
    exit 1
fi
broker=$(<"$RUN_DIR/broker.address")
echo "tpcflow worker ${PBS_ARRAY_INDEX:-0} on $(hostname) -> $broker"
run tpcflow worker --broker "$broker" --service "$SERVICE" --model "$MODEL" --device "$DEVICE" --max-batch "$MAX_BATCH"
