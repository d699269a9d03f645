#!/bin/bash
# tpcflow MDP broker as a Slurm job. It writes its address to $RUN_DIR/broker.address (a shared file
# system), where the worker and client jobs read it, and removes the file when it stops.
#
#   SBATCH_ACCOUNT=myproj SBATCH_PARTITION=cpu sbatch deploy/slurm/broker.sh      (or: deploy/slurm/launch.sh)
#
#SBATCH --job-name=tpcflow-broker
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --time=24:00:00
#SBATCH --output=tpcflow-broker-%j.out

# ---- site settings: edit here, or export them before sbatch -------------------------------------
IMAGE=${IMAGE:-}                          # tpcflow.sif (apptainer); empty: tpcflow from PATH
RUN_DIR=${RUN_DIR:-$PWD/tpcflow-run}      # shared folder for the broker address
PORT=${PORT:-5555}                        # the broker's TCP port on its node
BIND_HOST=${BIND_HOST:-0.0.0.0}           # interface to listen on (0.0.0.0: every one)
HOST=${HOST:-$(hostname -f)}              # the name other nodes reach this node by
# ---------------------------------------------------------------------------------------------------
set -euo pipefail

run() {
    if [[ -n "$IMAGE" ]]; then apptainer exec "$IMAGE" "$@"; else "$@"; fi
}

mkdir -p "$RUN_DIR"
address="tcp://$HOST:$PORT"
run tpcflow broker --bind "tcp://$BIND_HOST:$PORT" &
broker=$!
trap 'rm -f "$RUN_DIR/broker.address"; kill "$broker" 2>/dev/null || true' EXIT TERM INT
sleep 2
kill -0 "$broker"                         # fail the job now if the broker did not start
echo "$address" > "$RUN_DIR/broker.address.tmp"
mv "$RUN_DIR/broker.address.tmp" "$RUN_DIR/broker.address"   # appears whole to the readers
echo "tpcflow broker on $address"
wait "$broker"
