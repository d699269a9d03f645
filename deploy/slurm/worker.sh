#!/bin/bash
# tpcflow GPU workers as a Slurm array job: one worker per GPU, each serving $MODEL to the broker
# whose address the broker job wrote to $RUN_DIR/broker.address.
#
#   SBATCH_ACCOUNT=myproj SBATCH_PARTITION=gpu sbatch --array=0-3 deploy/slurm/worker.sh
#
#SBATCH --job-name=tpcflow-worker
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-task=1
#SBATCH --time=24:00:00
#SBATCH --output=tpcflow-worker-%A_%a.out

# ---- site settings: edit here, or export them before sbatch -------------------------------------
IMAGE=${IMAGE:-}                          # tpcflow.sif built with VARIANT=cuda; empty: tpcflow from PATH
RUN_DIR=${RUN_DIR:-$PWD/tpcflow-run}      # where the broker job writes broker.address
MODEL=${MODEL:-$PWD/cosmic_tagger.ckpt}   # checkpoint (or TorchScript file) to serve
SERVICE=${SERVICE:-cosmic_tagger}
DEVICE=${DEVICE:-cuda}                    # cpu for a CPU-only test
MAX_BATCH=${MAX_BATCH:-4}
WAIT_S=${WAIT_S:-600}                     # how long to wait for the broker's address
# ---------------------------------------------------------------------------------------------------
set -euo pipefail

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
echo "tpcflow worker ${SLURM_ARRAY_TASK_ID:-0} on $(hostname) -> $broker"
exec_args=(tpcflow worker --broker "$broker" --service "$SERVICE" --model "$MODEL" --device "$DEVICE"
           --max-batch "$MAX_BATCH")
run "${exec_args[@]}"
