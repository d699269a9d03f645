#!/bin/bash
# tpcflow MDP broker as a PBS Pro job (e.g. ALCF Polaris). It writes its address to
# $RUN_DIR/broker.address (a shared file system) for the worker and client jobs, and removes it at exit.
#
#   qsub -A myproj -q debug deploy/pbs/broker.sh                 (or: deploy/pbs/launch.sh)
#
#PBS -N tpcflow-broker
#PBS -l select=1:ncpus=2
#PBS -l walltime=24:00:00
#PBS -j oe

# ---- site settings: edit here, or pass them with qsub -v ----------------------------------------
IMAGE=${IMAGE:-}                          # tpcflow.sif (apptainer); empty: tpcflow from PATH
RUN_DIR=${RUN_DIR:-${PBS_O_WORKDIR:-$PWD}/tpcflow-run}
PORT=${PORT:-5555}                        # the broker's TCP port on its node
BIND_HOST=${BIND_HOST:-0.0.0.0}           # interface to listen on (0.0.0.0: every one)
HOST=${HOST:-$(hostname -f)}              # the name other nodes reach this node by
# ---------------------------------------------------------------------------------------------------
set -euo pipefail
cd "${PBS_O_WORKDIR:-$PWD}"

run() {
    if [[ -n "$IMAGE" ]]; then apptainer exec "$IMAGE" "$@"; else "$@"; fi
}

mkdir -p "$RUN_DIR"
address="tcp://$HOST:$PORT"
run tpcflow broker --bind "tcp://$BIND_HOST:$PORT" &
broker=$!
trap 'rm -f "$RUN_DIR/broker.address"; kill "$broker" 2>/dev/null || true' EXIT TERM INT
sleep 2
kill -0 "$broker"
echo "$address" > "$RUN_DIR/broker.address.tmp"
mv "$RUN_DIR/broker.address.tmp" "$RUN_DIR/broker.address"
echo "tpcflow broker on $address"
wait "$broker"
