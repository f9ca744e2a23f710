#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster on this machine (Debian/Ubuntu, as root): installs
# slurm-wlm and munge if missing, writes a localhost slurm.conf, starts munged, slurmctld and
# slurmd. Safe to run again: it only starts what is not running.
#
#   bash scripts/slurm_local.sh          # start (or check) the cluster
#   bash scripts/slurm_local.sh stop     # stop the daemons
#
# The node gets every CPU and most of the memory of the machine; one partition, `local`.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
NODE_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm

stop_daemons() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 1 30); do  # wait until they are gone, or pgrep below sees a dying one
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || return 0
        sleep 0.5
    done
}

stop() {
    stop_daemons
    pkill -x munged 2>/dev/null || true
    echo "local SLURM stopped"
}

if [ "${1:-start}" = "stop" ]; then
    stop
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (it installs packages and starts system daemons)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# --- munge: one key, shared by the controller and the node (the same machine)
mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    # --force: munged refuses to start as root-owned dirs otherwise
    su -s /bin/sh munge -c "munged --force" 2>/dev/null || munged --force
fi

# --- slurm.conf for one node: this host
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
mkdir -p "$CONF_DIR" "$STATE_DIR" "$NODE_DIR" "$LOG_DIR" "$RUN_DIR"
NEW_CONF=$(cat <<EOF
# Written by optbench scripts/slurm_local.sh: a one-node cluster on localhost.
ClusterName=optbench-local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${NODE_DIR}
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
SchedulerType=sched/backfill
SchedulerParameters=defer_batch=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MpiDefault=none
KillWait=10
MinJobAge=300
MaxArraySize=10001
MaxJobCount=20000
JobRequeue=1
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=local Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
if [ ! -f "$CONF_DIR/slurm.conf" ] || [ "$(cat "$CONF_DIR/slurm.conf")" != "$NEW_CONF" ]; then
    echo "$NEW_CONF" > "$CONF_DIR/slurm.conf"
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        echo "slurm.conf changed: restarting the daemons"
        stop_daemons
    fi
fi

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

# --- wait for the node to be schedulable
for _ in $(seq 1 60); do
    state=$(timeout 5 sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    case "$state" in
        idle*|mix*|alloc*) break ;;
        down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
state=$(timeout 5 sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
case "$state" in
    idle*|mix*|alloc*) ;;
    *) echo "error: node $HOST is '$state' (see $LOG_DIR/slurmctld.log, slurmd.log)" >&2; exit 1 ;;
esac
echo "local SLURM is up: partition 'local', node $HOST ($CPUS CPUs, ${MEM_MB} MB)."
echo "stop it with: bash scripts/slurm_local.sh stop"
