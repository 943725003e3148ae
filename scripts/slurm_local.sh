#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests and for a workstation.
#
#   scripts/slurm_local.sh start    # install (apt-get, once) and start the daemons
#   scripts/slurm_local.sh status   # which of our daemons run; sinfo
#   scripts/slurm_local.sh stop     # stop the daemons this script started (by their pids)
#   scripts/slurm_local.sh env      # print `export SLURM_CONF=...` for sbatch/squeue/sacct
#
# Everything lives in one folder, $CPT_SLURM_DIR (default build/slurm of the project): the
# configuration, MariaDB's data (accounting: without it a task that dies hard is never seen as
# failed), the state, the logs and the pid files. Nothing under /etc is changed; the commands
# find the configuration through SLURM_CONF. Runs as root (slurmd must); settings measured to
# work in a container without systemd or cgroups (see the book's "Running on a cluster").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$(mkdir -p "${CPT_SLURM_DIR:-$ROOT/build/slurm}" && cd "${CPT_SLURM_DIR:-$ROOT/build/slurm}" && pwd)"
ETC="$DIR/etc" RUN="$DIR/run" LOG="$DIR/log" STATE="$DIR/state"
export SLURM_CONF="$ETC/slurm.conf"
export MYSQL_UNIX_PORT="$RUN/mysqld.sock"   # how slurmdbd's MariaDB client finds the server
PORT="${CPT_SLURM_PORT:-6817}"              # slurmctld; slurmd +1, slurmdbd +2
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)
# Daemons in start order: name, pid file, the executable that must own the pid.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

pidfile() { echo "$RUN/$1.pid"; }

# The pid of our daemon $1 if it runs (its pid file names a live process of that program).
live_pid() {
  local file pid
  file="$(pidfile "$1")"
  [[ -s "$file" ]] || return 1
  pid="$(tr -dc 0-9 <"$file")"
  [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
  [[ "$(cat "/proc/$pid/comm")" == "$1"* ]] || return 1
  echo "$pid"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "packages ${missing[*]} are missing and there is no apt-get"
  say "installing ${missing[*]} (apt-get) ..."
  apt-get update -qq
  # The packages' own service starts are refused without systemd: harmless.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$LOG/apt.log" 2>&1 || { tail -20 "$LOG/apt.log" >&2; die "apt-get install failed"; }
}

write_config() {
  local node
  # The hardware line slurmd measures, under the node name the daemons are started with.
  node="$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1/')"
  cat >"$ETC/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a single-node cluster (see book/cluster.md).
ClusterName=cpt
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=60
InactiveLimit=0
$node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"
}

# Wait up to $2 seconds for the command $1 to succeed.
wait_for() {
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    eval "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# Slurm's clients reach munged at its default socket (AuthInfo does not reach slurmdbd's
# connections in 22.05), so a munged already serving it (a workstation's own) is used as is.
MUNGE_SOCKET=/run/munge/munge.socket.2
munge_answers() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munged() {
  if munge_answers; then say "using the munged already running"; return 0; fi
  mkdir -p /run/munge
  [[ -s "$ETC/munge.key" ]] || { mungekey -c -k "$ETC/munge.key" 2>/dev/null ||
    dd if=/dev/urandom of="$ETC/munge.key" bs=1024 count=1 status=none; }
  chmod 600 "$ETC/munge.key"
  # --force: as root, in a folder munged did not create for itself.
  munged --force --key-file="$ETC/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$(pidfile munged)" --log-file="$LOG/munged.log" --seed-file="$STATE/munge.seed"
}

start_mariadbd() {
  if [[ ! -d "$STATE/mysql/mysql" ]]; then
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mysql-install.log" 2>&1 ||
      { tail -20 "$LOG/mysql-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  # Unix socket only: nothing listens on the network.
  setsid mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --socket="$MYSQL_UNIX_PORT" \
    --pid-file="$(pidfile mariadbd)" --skip-networking --log-error="$LOG/mysqld.log" \
    </dev/null >/dev/null 2>&1 &
  wait_for "timeout 5 mariadb --no-defaults --socket='$MYSQL_UNIX_PORT' -e 'select 1'" 60 ||
    die "MariaDB did not start; see $LOG/mysqld.log"
}

start_slurmdbd() {
  slurmdbd
  wait_for "timeout 5 sacctmgr -n show cluster" 30 || die "slurmdbd did not answer; see $LOG/slurmdbd.log"
  sacctmgr -i -n show cluster format=cluster | grep -qw cpt || sacctmgr -i add cluster cpt >/dev/null
}

start_slurmctld() { slurmctld; }
start_slurmd() { slurmd -N localhost; }

start() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/slurmctld" "$STATE/slurmd"
  [[ $EUID -eq 0 ]] || die "must run as root (slurmd starts jobs as their users)"
  install_packages
  write_config
  local d
  for d in "${DAEMONS[@]}"; do
    if live_pid "$d" >/dev/null; then continue; fi
    "start_$d"
    [[ $d == munged ]] && munge_answers && continue
    wait_for "live_pid $d" 20 || die "$d did not start; see $LOG/"
  done
  # The node comes up idle a few seconds after slurmd registers.
  wait_for "timeout 5 sinfo -h -o %T | grep -qx idle" 60 || die "the node is not idle; see $LOG/slurmctld.log"
  say "up: $(sinfo -h -o '%P %D %T %c CPUs')"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
  local d pid i stopped=()
  # Reverse start order; only processes whose pid file this folder holds.
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d="${DAEMONS[i]}"
    pid="$(live_pid "$d")" || continue
    kill "$pid"
    wait_for "! kill -0 $pid" 20 || { say "$d ($pid) ignores SIGTERM: SIGKILL"; kill -9 "$pid"; }
    rm -f "$(pidfile "$d")"
    stopped+=("$d($pid)")
  done
  say "stopped: ${stopped[*]:-nothing was running}"
}

status() {
  local d pid up=0
  for d in "${DAEMONS[@]}"; do
    if pid="$(live_pid "$d")"; then echo "$d running (pid $pid)"; up=$((up + 1))
    else echo "$d not running"; fi
  done
  if ((up == ${#DAEMONS[@]})); then sinfo; echo "export SLURM_CONF=$SLURM_CONF"; else return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
