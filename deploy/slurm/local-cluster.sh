#!/usr/bin/env bash
# A one-machine Slurm cluster in a folder of its own: munge with a fresh key,
# slurmctld and one slurmd on this host (all of its CPUs, no GPUs), on ports
# of their own, nothing written outside DIR. For trying the batch scripts and
# for their test (tests/slurm/test_slurm.sh); Debian's slurm-wlm and munge,
# run as root.
#
#   bash deploy/slurm/local-cluster.sh start DIR   # then: export SLURM_CONF=DIR/slurm.conf
#   bash deploy/slurm/local-cluster.sh stop DIR
set -euo pipefail
cmd=${1:?usage: local-cluster.sh start|stop DIR}
dir=${2:?usage: local-cluster.sh start|stop DIR}
dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
export SLURM_CONF=$dir/slurm.conf

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $cmd in
start)
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || { echo "local-cluster: $tool is missing (apt-get install slurm-wlm munge)" >&2; exit 1; }
  done
  [[ $(id -u) -eq 0 ]] || { echo "local-cluster: run as root" >&2; exit 1; }
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 755 "$dir" "$dir/munge"
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed"
  node=$(hostname -s)
  cat >"$SLURM_CONF" <<CONF
ClusterName=minaslocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 60); do
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && { echo "local-cluster: up (SLURM_CONF=$SLURM_CONF)"; exit 0; }
    sleep 0.5
  done
  echo "local-cluster: the node did not come up; logs in $dir/log" >&2
  tail -n 20 "$dir/log/"*.log >&2 || true
  exit 1
  ;;
stop)
  if [[ -f $SLURM_CONF ]]; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    sleep 1
    scontrol shutdown 2>/dev/null || true
  fi
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  munged --stop --socket="$dir/munge/munge.socket" 2>/dev/null || true
  ;;
*)
  echo "usage: local-cluster.sh start|stop DIR" >&2
  exit 2
  ;;
esac
