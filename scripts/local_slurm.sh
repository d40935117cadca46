#!/usr/bin/env bash
# A one-host SLURM cluster for trying seqae's SLURM path on a laptop or in CI (run as root).
#
#   bash scripts/local_slurm.sh start     # install slurm-wlm and munge if missing, start the daemons
#   export SLURM_CONF=/tmp/seqae-slurm/slurm.conf   # start prints this line: sinfo, sbatch and seqae use it
#   bash scripts/local_slurm.sh status
#   bash scripts/local_slurm.sh stop      # stops only the daemons start started
#
# Everything it writes (config, munge key, state, logs, pid files) lives under SEQAE_SLURM_DIR
# (default /tmp/seqae-slurm). One node with this machine's cores, one partition, `debug`.
set -euo pipefail

DIR=${SEQAE_SLURM_DIR:-/tmp/seqae-slurm}
export SLURM_CONF=$DIR/slurm.conf
HOST=$(hostname -s)

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld > /dev/null && command -v slurmd > /dev/null && command -v munged > /dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed, and installing them needs root (apt-get)."
    command -v apt-get > /dev/null || die "slurm-wlm and munge are not installed, and this machine has no apt-get to install them; install SLURM and munge, then run this again."
    echo "Installing slurm-wlm and munge (apt-get) ..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge > "$DIR/apt.log" 2>&1; } \
        || die "apt-get could not install slurm-wlm and munge; see $DIR/apt.log."
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/log"
    chmod 700 "$DIR/munge"
    [ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" status=none; chmod 400 "$DIR/munge/munge.key"; }
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$SLURM_CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-host cluster, root as SlurmUser.
ClusterName=seqae
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

running() { local pid; pid=$(cat "$DIR/$1.pid" 2> /dev/null) && kill -0 "$pid" 2> /dev/null; }

start() {
    mkdir -p "$DIR"
    install_packages
    write_config
    running munged || munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" \
        || die "munged did not start; see $DIR/log/munged.log."
    running slurmctld || slurmctld || die "slurmctld did not start; see $DIR/log/slurmctld.log."
    running slurmd || slurmd || die "slurmd did not start; see $DIR/log/slurmd.log."
    for _ in $(seq 60); do
        if sinfo -h -N -o %T 2> /dev/null | grep -qx idle; then
            echo "The local SLURM cluster is up: node $HOST, partition debug, $(nproc) CPUs."
            echo "export SLURM_CONF=$SLURM_CONF"
            return
        fi
        scontrol update nodename="$HOST" state=resume > /dev/null 2>&1 || true
        sleep 1
    done
    sinfo -N >&2 || true
    die "the node did not become idle within 60 s; see $DIR/log/."
}

stop() {
    local pid
    for daemon in slurmd slurmctld munged; do
        if pid=$(cat "$DIR/$daemon.pid" 2> /dev/null) && kill -0 "$pid" 2> /dev/null; then
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        fi
        rm -f "$DIR/$daemon.pid"
    done
    echo "The local SLURM cluster is stopped."
}

status() {
    for daemon in munged slurmctld slurmd; do
        if running $daemon; then echo "$daemon: running (pid $(cat "$DIR/$daemon.pid"))"; else echo "$daemon: stopped"; fi
    done
    running slurmctld && sinfo -N
    echo "export SLURM_CONF=$SLURM_CONF"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: bash scripts/local_slurm.sh start|stop|status" ;;
esac
