#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests (root, no systemd):
#   tests/cluster/slurm.sh up      install (Debian packages) if needed, configure, start
#   tests/cluster/slurm.sh down    stop the daemons it started (by their pid files) and put back
#                                  the SLURM config files it replaced (or remove its own)
# A munged that was running before is used and left running; an existing /etc/slurm/slurm.conf
# or gres.conf is kept in $ROOT/orig and restored by `down`.
# The node offers this machine's CPUs and memory and one fake GPU (gres on /dev/null), in the
# partition "test". Accounting is off: tell the executor plugin --slurm-no-account and
# --slurm-status-command squeue.
set -euo pipefail
ROOT=${SLURM_TEST_ROOT:-/tmp/pipeline-slurm}
ACTION=${1:-up}

install() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null && return
    echo "installing slurmctld slurmd munge slurm-client (Debian packages)..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd munge slurm-client >/dev/null
}

stop_pid() {
    [ -f "$1" ] || return 0
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$1"
}

down() {
    stop_pid "$ROOT/run/slurmd.pid"
    stop_pid "$ROOT/run/slurmctld.pid"
    stop_pid "$ROOT/run/munged.pid"  # only there when this script started munged
    # Put the config back as it was: the original, or none. A config of ours left behind makes
    # every SLURM client wait ~9 s for the stopped controller, and Snakemake's SLURM plugin asks
    # `scontrol show config` each time Snakemake starts.
    for f in slurm.conf gres.conf; do
        if [ -f "$ROOT/orig/$f" ]; then
            mv -f "$ROOT/orig/$f" "/etc/slurm/$f"
        elif [ -f "/etc/slurm/$f" ] && grep -q "^# written by tests/cluster/slurm.sh" "/etc/slurm/$f"; then
            rm -f "/etc/slurm/$f"
        fi
    done
}

keep_original() {  # a config file that is not this script's is set aside once, for `down`
    local f=/etc/slurm/$1
    if [ -f "$f" ] && ! grep -q "^# written by tests/cluster/slurm.sh" "$f" && [ ! -f "$ROOT/orig/$1" ]; then
        mkdir -p "$ROOT/orig"
        cp -p "$f" "$ROOT/orig/$1"
    fi
}

up() {
    install
    down
    mkdir -p "$ROOT"/{state,spool,log,run} /etc/slurm /run/munge /var/log/munge /var/lib/munge
    local cpus mem
    cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc: it answers OMP_NUM_THREADS
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
    keep_original slurm.conf
    keep_original gres.conf
    cat > /etc/slurm/slurm.conf <<CONF
# written by tests/cluster/slurm.sh
ClusterName=pipeline-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    printf '# written by tests/cluster/slurm.sh\nName=gpu File=/dev/null\n' > /etc/slurm/gres.conf
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    if ! pgrep -u munge munged >/dev/null; then  # one already running is not ours to stop
        runuser -u munge -- /usr/sbin/munged
        pgrep -u munge munged | head -1 > "$ROOT/run/munged.pid"
    fi
    /usr/sbin/slurmctld
    /usr/sbin/slurmd -N localhost
    for _ in $(seq 100); do
        if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mix"; then
            echo "slurm up: partition test, $cpus CPUs, ${mem} MB, 1 gpu (fake)"
            return 0
        fi
        sleep 0.2
    done
    echo "slurm did not come up; logs in $ROOT/log" >&2
    tail -5 "$ROOT"/log/*.log >&2 || true
    return 1
}

case "$ACTION" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
