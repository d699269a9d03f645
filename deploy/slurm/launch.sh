#!/bin/bash
# Submit the broker, the GPU workers and the clients of one tpcflow run on a Slurm site.
# Edit the settings, then run: bash deploy/slurm/launch.sh
set -euo pipefail

# ---- site settings --------------------------------------------------------------------------------
export SBATCH_ACCOUNT=${SBATCH_ACCOUNT:-myproject}
CPU_PARTITION=${CPU_PARTITION:-cpu}
GPU_PARTITION=${GPU_PARTITION:-gpu}
N_WORKERS=${N_WORKERS:-4}                 # one per GPU
export IMAGE=${IMAGE-$PWD/tpcflow.sif}      # IMAGE= (empty): tpcflow from PATH
export RUN_DIR=${RUN_DIR:-$PWD/tpcflow-run}
export MODEL=${MODEL:-$PWD/cosmic_tagger.ckpt}
export FILE_LIST=${FILE_LIST:-$PWD/files.txt}
export OUT_DIR=${OUT_DIR:-$PWD/predictions}
# ---------------------------------------------------------------------------------------------------

here=$(cd "$(dirname "$0")" && pwd)
n_files=$(grep -c . "$FILE_LIST")
broker=$(sbatch --parsable --export=ALL --partition="$CPU_PARTITION" "$here/broker.sh")
workers=$(sbatch --parsable --export=ALL --partition="$GPU_PARTITION" --array="0-$((N_WORKERS - 1))" \
    --dependency="after:$broker" "$here/worker.sh")
clients=$(sbatch --parsable --export=ALL --partition="$CPU_PARTITION" --array="0-$((n_files - 1))" \
    --dependency="after:$broker" "$here/client.sh")
echo "broker job $broker, worker array $workers, client array $clients"
echo "when the clients are done: scancel $broker $workers"
