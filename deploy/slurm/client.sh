#!/bin/bash
# tpcflow submit as a Slurm array job over a file list: task N sends line N+1 of $FILE_LIST to the
# service and writes <OUT_DIR>/<input name>_pred.h5. With --fallback local the task runs the model
# on its own CPU when the broker cannot be reached, so that a grid job never dies with the server.
#
#   SBATCH_ACCOUNT=myproj SBATCH_PARTITION=cpu sbatch --array=0-$(($(wc -l < files.txt) - 1)) deploy/slurm/client.sh
#
#SBATCH --job-name=tpcflow-client
#SBATCH --array=0-9
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
#SBATCH --output=tpcflow-client-%A_%a.out

# ---- site settings: edit here, or export them before sbatch -------------------------------------
IMAGE=${IMAGE:-}                          # tpcflow.sif; empty: tpcflow from PATH
RUN_DIR=${RUN_DIR:-$PWD/tpcflow-run}      # where the broker job writes broker.address
FILE_LIST=${FILE_LIST:-$PWD/files.txt}    # one larcv3 or larcv ROOT file per line
OUT_DIR=${OUT_DIR:-$PWD/predictions}
MODEL=${MODEL:-$PWD/cosmic_tagger.ckpt}   # for the local fallback: the model the workers serve
SERVICE=${SERVICE:-cosmic_tagger}
TIMEOUT=${TIMEOUT:-120}                   # seconds per reply before the fallback takes over
# ---------------------------------------------------------------------------------------------------
set -euo pipefail

run() {
    if [[ -n "$IMAGE" ]]; then apptainer exec "$IMAGE" "$@"; else "$@"; fi
}

task=${SLURM_ARRAY_TASK_ID:-0}
input=$(sed -n "$((task + 1))p" "$FILE_LIST")
if [[ -z "$input" ]]; then
    echo "task $task: $FILE_LIST has no line $((task + 1))" >&2
    exit 1
fi
name=$(basename "$input")
mkdir -p "$OUT_DIR"
broker=tcp://127.0.0.1:1                  # nothing there: straight to the fallback if no broker runs
[[ -s "$RUN_DIR/broker.address" ]] && broker=$(<"$RUN_DIR/broker.address")
run tpcflow submit "$input" -o "$OUT_DIR/${name%.*}_pred.h5" --broker "$broker" --service "$SERVICE" \
    --timeout "$TIMEOUT" --retries 1 --fallback local --model "$MODEL" --device cpu --no-progress
