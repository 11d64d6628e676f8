#!/usr/bin/env bash
# Starts (or stops) a real SLURM with accounting on this machine, for the
# integration tests and for trying `reproduce run --cluster local-slurm`:
# munged, MariaDB, slurmdbd, slurmctld and slurmd from Debian's packages, all
# state under $SLURM_SCRATCH (default /tmp/musu-slurm).
#
#   cluster/local-slurm.sh start              # one node, named after this host; idempotent
#   cluster/local-slurm.sh start --nodes 3    # three nodes HOST-n1..n3, one slurmd each (own name,
#                                             # port, spool folder, pid and log file), all on 127.0.0.1
#   cluster/local-slurm.sh stop
#   cluster/local-slurm.sh status
#   cluster/local-slurm.sh start-db # MariaDB alone (the tests' MySQL stores), idempotent
set -euo pipefail
ACTION="${1:-start}"
NODES=1
if [ "${2:-}" = "--nodes" ]; then
    NODES="${3:-}"
    [[ "$NODES" =~ ^[1-9]$ ]] || { echo "[local-slurm] error: --nodes takes 1 to 9, got '${3:-}'" >&2; exit 2; }
elif [ -n "${2:-}" ]; then
    echo "[local-slurm] error: unknown option '$2' (start --nodes N)" >&2; exit 2
fi
SCRATCH="${SLURM_SCRATCH:-/tmp/musu-slurm}"
CLUSTER_NAME="musu"
HOST="$(hostname -s)"
# nproc counts OMP_NUM_THREADS as the processors: a caller that set it would shrink the node
CPUS="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))"
CONF_DIR="/etc/slurm"
log() { echo "[local-slurm] $*" >&2; }
need() { command -v "$1" >/dev/null || { log "error: $1 not found: run scripts/bootstrap.sh (installs slurm-wlm slurmdbd munge mariadb-server)"; exit 1; }; }

# The daemons this script started, by their pid files: never by name, so a
# test or a second SLURM on the machine is never hit by mistake.
daemon_pid() {  # daemon_pid NAME: prints the pid of our running NAME, or fails
    local f="$SCRATCH/$1.pid" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "${1%%-*}" ] && echo "$pid"  # slurmd-NODE is a slurmd
}
running() { daemon_pid "$1" >/dev/null; }
slurmd_pid_files() {  # one per slurmd this script started: slurmd.pid (one node) or slurmd-NODE.pid
    ls "$SCRATCH"/slurmd.pid "$SCRATCH"/slurmd-*.pid 2>/dev/null || true
}
any_slurmd() {  # any slurmd of ours running
    local f pid
    for f in $(slurmd_pid_files); do
        pid="$(cat "$f")"
        [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = slurmd ] && return 0
    done
    return 1
}
node_names() {  # the nodes of this configuration
    if [ "$NODES" = 1 ]; then echo "$HOST"; else for i in $(seq "$NODES"); do echo "$HOST-n$i"; done; fi
}

wait_for() {  # wait_for SECONDS CMD...
    local t="$1"; shift
    for _ in $(seq "$((t * 5))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
    wait_for 10 munge -n || { log "error: munged did not start"; exit 1; }
}

start_mariadb() {
    mkdir -p /run/mysqld "$SCRATCH"; chown mysql:mysql /run/mysqld
    # `start` and `start-db` may run at once (two test processes): one of them starts MariaDB.
    exec 8>"$SCRATCH/mariadb-start.lock"; flock 8
    if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1
        (mysqld_safe --user=mysql --bind-address=127.0.0.1 >/dev/null 2>&1 &)
    fi
    wait_for 30 mariadb -e "select 1" || { log "error: MariaDB did not start"; exit 1; }
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
                CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    flock -u 8; exec 8>&-
}

write_configs() {
    mkdir -p "$CONF_DIR" "$SCRATCH"/{state,spool,log}
    local name i=0
    if [ "$NODES" = 1 ]; then
        NODE_SUFFIX="" PARTITION_EXTRA=""
        NODE_LINES="NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN"
    else
        # Several slurmd on one machine: each its own node name and port; %n is the node's name.
        NODE_SUFFIX="-%n"
        PARTITION_EXTRA=" LLN=YES"  # each job to the least loaded node: a table's array spreads over them
        NODE_LINES=""
        for name in $(node_names); do
            i=$((i + 1))
            NODE_LINES+="NodeName=$name NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$CPUS RealMemory=$((MEM_MB / NODES)) State=UNKNOWN"$'\n'
            mkdir -p "$SCRATCH/spool-$name"
        done
    fi
    cat > "$CONF_DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$SCRATCH/log/slurmdbd.log
PidFile=$SCRATCH/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
    cat > "$CONF_DIR/slurm.conf.new" <<CONF
ClusterName=$CLUSTER_NAME
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (120 by default).
AuthInfo=cred_expire=10
# A test cluster answers at once: a job that waited (a requeue's cred_expire, a slot) is
# started by the next scheduling pass, every 60 s by default (30 s for backfill); here
# every 2 s (1 s). A cluster of real size keeps the defaults.
SchedulerParameters=sched_interval=2,bf_interval=1
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool$NODE_SUFFIX
SlurmctldPidFile=$SCRATCH/slurmctld.pid
SlurmdPidFile=$SCRATCH/slurmd$NODE_SUFFIX.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd$NODE_SUFFIX.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
JobRequeue=1
ReturnToService=2
# a dead node is noticed within 10 s (slurmctld pings every third of it); 300 by default
SlurmdTimeout=10
MinJobAge=60
KillWait=10
InactiveLimit=0
MpiDefault=none
# Tiny, so that a table of three rows already goes as two arrays (tests/test_reproduce_run.py).
MaxArraySize=2
$NODE_LINES
PartitionName=debug Nodes=$(node_names | paste -sd, -) Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO$PARTITION_EXTRA
CONF
    # Daemons started with an older configuration are restarted with this one.
    if ! cmp -s "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"; then
        mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
        if running slurmctld || any_slurmd; then
            log "configuration changed: restarting slurmctld and slurmd"
            stop
        fi
    else
        rm -f "$CONF_DIR/slurm.conf.new"
    fi
}

start() {
    for c in munged slurmctld slurmd slurmdbd sacctmgr mysqld_safe; do need "$c"; done
    start_munge
    start_mariadb
    write_configs
    running slurmdbd || slurmdbd
    wait_for 30 sacctmgr -n list cluster || { log "error: slurmdbd did not answer; see $SCRATCH/log/slurmdbd.log"; exit 1; }
    sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER_NAME" || sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
    running slurmctld || slurmctld
    wait_for 30 scontrol ping || { log "error: slurmctld did not start; see $SCRATCH/log/slurmctld.log"; exit 1; }
    local name nodes ready
    nodes="$(node_names | paste -sd, -)"
    if [ "$NODES" = 1 ]; then
        running slurmd || slurmd
    else
        for name in $(node_names); do running "slurmd-$name" || slurmd -N "$name"; done
    fi
    ready="sinfo -h -N -o %T | grep -Ecx 'idle|mixed|allocated|mix|alloc' | grep -qx $NODES"
    wait_for 30 sh -c "$ready" || {
        scontrol update nodename="$nodes" state=resume >/dev/null 2>&1 || true
        wait_for 15 sh -c "$ready" || { log "error: not all of $nodes are idle; see $SCRATCH/log/slurmd*.log"; exit 1; }
    }
    log "SLURM cluster '$CLUSTER_NAME' up: partition debug, node(s) $nodes ($CPUS CPUs each)"
}

stop() {
    local d f pid
    for f in $(slurmd_pid_files); do
        pid="$(cat "$f")"
        [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = slurmd ] && kill "$pid" 2>/dev/null || true
    done
    for d in slurmctld slurmdbd; do
        pid="$(daemon_pid "$d")" && kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do any_slurmd || running slurmctld || break; sleep 0.2; done
    log "stopped slurmd, slurmctld, slurmdbd (munged and MariaDB left running)"
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) sinfo && squeue ;;
    start-db) need mysqld_safe; start_mariadb; log "MariaDB up on 127.0.0.1:3306 (cluster/mlflow-db.sh makes a store in it)" ;;
    *) echo "usage: $0 start|stop|restart|status|start-db" >&2; exit 2 ;;
esac
