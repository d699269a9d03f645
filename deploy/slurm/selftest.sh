#!/bin/bash
# Self-test of the Slurm templates on a one-node Slurm cluster on this machine (bound to 127.0.0.1),
# outside the CI suite: a tiny network is trained, then launch.sh submits the broker, one worker (CPU,
# a GPU gres backed by /dev/null) and a client array over two generated files; the outputs are checked.
#
#   apt-get install slurm-wlm          # Debian's Slurm (slurmctld, slurmd, sbatch), no munge needed here
#   bash deploy/slurm/selftest.sh      # about a minute; tpcflow on PATH
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/tpcflow-slurm-selftest.XXXXXX)
ctld_port=${CTLD_PORT:-16817}
slurmd_port=${SLURMD_PORT:-16818}
broker_port=${BROKER_PORT:-16555}
pids=()
# shellcheck disable=SC2329  # run by the EXIT trap
cleanup() {
    scancel --user="$(id -un)" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
echo "== work folder $work"

echo "== a tiny network and two input files"
tpcflow train run.id=net data.synthetic=true data.downsample=4 data.synthetic_events=4 run.iterations=2 \
    run.aux_iterations=0 network.n_initial_filters=4 network.network_depth=3 run.progress=false \
    run.output_dir="$work/runs" > train.log
model="$work/runs/net/checkpoints/checkpoint-00000002.pt"
tpcflow generate a.h5 --events 3 --seed 11 > /dev/null 2>&1
tpcflow generate b.h5 --events 2 --seed 12 > /dev/null 2>&1
printf '%s\n' "$work/a.h5" "$work/b.h5" > files.txt

echo "== one-node cluster: slurmctld on 127.0.0.1:$ctld_port, slurmd on :$slurmd_port"
mkdir -p state spool log
cat > slurm.conf <<CONF
ClusterName=selftest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$(id -un)
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 RealMemory=8000 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
echo "NodeName=localhost Name=gpu File=/dev/null" > gres.conf
export SLURM_CONF="$work/slurm.conf"
slurmctld -D -f "$SLURM_CONF" > log/slurmctld.out 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N localhost > log/slurmd.out 2>&1 &
pids+=($!)
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo

echo "== launch.sh: broker, one worker, a client array of two files"
export CPU_PARTITION=debug GPU_PARTITION=debug N_WORKERS=1 IMAGE="" MODEL="$model" FILE_LIST="$work/files.txt" \
    RUN_DIR="$work/run" OUT_DIR="$work/predictions" DEVICE=cpu MAX_BATCH=1 PORT="$broker_port" \
    BIND_HOST=127.0.0.1 HOST=127.0.0.1 TIMEOUT=60
launch=$(bash "$here/launch.sh")
echo "$launch"
read -r broker workers clients < <(echo "$launch" | head -1 | sed -E 's/.*job ([0-9]+), worker array ([0-9]+), client array ([0-9]+).*/\1 \2 \3/')
for _ in $(seq 300); do
    [[ -z "$(squeue -h -j "$clients" 2>/dev/null)" ]] && break
    sleep 1
done
squeue
scancel "$broker" "$workers"
sleep 2

echo "== job logs"
for f in tpcflow-*.out; do echo "--- $f"; cat "$f"; done
echo "== outputs"
ok=0
for name in a b; do
    out="$work/predictions/${name}_pred.h5"
    if [[ -f "$out" ]]; then tpcflow info "$out" | head -8; else echo "MISSING $out"; ok=1; fi
done
if grep -q "RUN LOCALLY" tpcflow-client-*.out; then echo "a client fell back to local inference"; ok=1; fi
[[ $ok -eq 0 ]] && echo "== selftest passed: every client was answered by the Slurm worker" || echo "== selftest FAILED"
exit $ok
