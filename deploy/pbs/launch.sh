#!/bin/bash
# Submit the broker, the GPU workers and the clients of one tpcflow run on a PBS Pro site.
# Edit the settings, then run: bash deploy/pbs/launch.sh
set -euo pipefail

# ---- site settings --------------------------------------------------------------------------------
ACCOUNT=${ACCOUNT:-myproject}
CPU_QUEUE=${CPU_QUEUE:-debug}
GPU_QUEUE=${GPU_QUEUE:-prod}
N_WORKERS=${N_WORKERS:-4}
IMAGE=${IMAGE-$PWD/tpcflow.sif}             # IMAGE= (empty): tpcflow from PATH
RUN_DIR=${RUN_DIR:-$PWD/tpcflow-run}
MODEL=${MODEL:-$PWD/cosmic_tagger.ckpt}
FILE_LIST=${FILE_LIST:-$PWD/files.txt}
OUT_DIR=${OUT_DIR:-$PWD/predictions}
# ---------------------------------------------------------------------------------------------------

here=$(cd "$(dirname "$0")" && pwd)
n_files=$(grep -c . "$FILE_LIST")
vars="IMAGE=$IMAGE,RUN_DIR=$RUN_DIR,MODEL=$MODEL,FILE_LIST=$FILE_LIST,OUT_DIR=$OUT_DIR"
broker=$(qsub -A "$ACCOUNT" -q "$CPU_QUEUE" -v "$vars" "$here/broker.sh")
workers=$(qsub -A "$ACCOUNT" -q "$GPU_QUEUE" -v "$vars" -J "0-$((N_WORKERS - 1))" -W "depend=after:$broker" \
    "$here/worker.sh")
clients=$(qsub -A "$ACCOUNT" -q "$CPU_QUEUE" -v "$vars" -J "0-$((n_files - 1))" -W "depend=after:$broker" \
    "$here/client.sh")
echo "broker job $broker, worker array $workers, client array $clients"
echo "when the clients are done: qdel $broker $workers"
