#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster on this machine (Debian/Ubuntu, as root): installs
# slurm-wlm and munge if missing, writes a localhost slurm.conf, starts munged, slurmctld and
# slurmd. Safe to run again: it only starts what is not running.
#
#   bash scripts/slurm_local.sh                # start (or check) the cluster: one node
#   bash scripts/slurm_local.sh start --nodes 2  # two nodes on this host (multi-node jobs)
#   bash scripts/slurm_local.sh stop           # stop the daemons
#
# One node gets every CPU and most of the memory of the machine; one partition, `local`.
# With --nodes N, N slurmd daemons run here (node1..nodeN, ports 17001..), each declaring every
# CPU (oversubscribed: SlurmdParameters=config_overrides) and 1/N of the memory, so that a job
# spans N nodes (srun -N N) and data-parallel training crosses "nodes" as on a cluster.
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
NODES=1
if [ "${2:-}" = "--nodes" ]; then
    NODES=${3:?--nodes needs a number}
fi
case "$NODES" in
    ''|*[!0-9]*|0) echo "error: --nodes must be a number >= 1, got '$NODES'" >&2; exit 1 ;;
esac

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
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 / NODES ))
if [ "$NODES" = 1 ]; then
    NODE_NAMES=$HOST
    NODE_LINES="NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN"
    SPOOL=$NODE_DIR; PIDFILE=$RUN_DIR/slurmd.pid; NODE_LOG=$LOG_DIR/slurmd.log; OVERRIDES=""
else  # several slurmd on this host: per-node spool, pid and log files (%n: the node's name)
    NODE_NAMES=$(seq -f "node%g" -s, 1 "$NODES")
    NODE_LINES=$(for i in $(seq 1 "$NODES"); do
        echo "NodeName=node$i NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN"
    done)
    SPOOL=$NODE_DIR/%n; PIDFILE=$RUN_DIR/slurmd-%n.pid; NODE_LOG=$LOG_DIR/slurmd-%n.log
    OVERRIDES="SlurmdParameters=config_overrides"
    for i in $(seq 1 "$NODES"); do
        mkdir -p "$NODE_DIR/node$i"
        # jobs address each other by node name (torch's rendezvous at the first node): resolve
        grep -qE "^127\.0\.0\.1[[:space:]].*\bnode$i\b" /etc/hosts \
            || echo "127.0.0.1 node$i" >> /etc/hosts
    done
fi
mkdir -p "$CONF_DIR" "$STATE_DIR" "$NODE_DIR" "$LOG_DIR" "$RUN_DIR"
NEW_CONF=$(cat <<EOF
# Written by optbench scripts/slurm_local.sh: a one-node cluster on localhost.
ClusterName=optbench-local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL}
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${PIDFILE}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${NODE_LOG}
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
${OVERRIDES}
${NODE_LINES}
PartitionName=local Nodes=${NODE_NAMES} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
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
if [ "$NODES" = 1 ]; then
    pgrep -x slurmd >/dev/null || slurmd
else
    for i in $(seq 1 "$NODES"); do
        pgrep -f "slurmd -N node$i\$" >/dev/null || slurmd -N "node$i"
    done
fi

# --- wait for every node to be schedulable
ready() {  # every node idle, mixed or allocated
    local states
    states=$(timeout 5 sinfo -h -N -n "$NODE_NAMES" -o %t 2>/dev/null || true)
    [ "$(echo "$states" | grep -cE '^(idle|mix|alloc)')" = "$NODES" ]
}
for _ in $(seq 1 60); do
    ready && break
    if timeout 5 sinfo -h -N -n "$NODE_NAMES" -o %t 2>/dev/null | grep -qE '^(down|drain)'; then
        scontrol update nodename="$NODE_NAMES" state=resume >/dev/null 2>&1 || true
    fi
    sleep 1
done
if ! ready; then
    echo "error: nodes $NODE_NAMES are not all up: $(sinfo -h -N -o '%N %t' | tr '\n' ' ')" \
         "(see $LOG_DIR/slurmctld.log, slurmd*.log)" >&2
    exit 1
fi
echo "local SLURM is up: partition 'local', $NODES node(s) $NODE_NAMES ($CPUS CPUs, ${MEM_MB} MB each)."
echo "stop it with: bash scripts/slurm_local.sh stop"
