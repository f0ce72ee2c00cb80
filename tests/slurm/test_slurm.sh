#!/usr/bin/env bash
# The Slurm path end to end on a one-machine cluster (Debian's slurm-wlm and
# munge, configured here by deploy/slurm/local-cluster.sh): the controller
# job and a worker job from deploy/slurm/ run a small real search (CPU
# training on Fashion-MNIST), the worker job is cancelled mid-search with
# scancel, its trial goes back to the queue, and a second worker job finishes
# the budget: every trial done exactly once, the jobs end by themselves.
#
#   bash tests/slurm/test_slurm.sh build/minas      (as root; CTest: ctest -L slurm)
#
# Exits 77 (skipped) without root, Slurm, munge or the data set.
set -euo pipefail
minas=$(realpath "${1:?usage: test_slurm.sh PATH/TO/minas}")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
skip() { echo "SKIPPED: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root (it starts munged, slurmctld and slurmd)"
for tool in munged slurmctld slurmd sbatch scancel squeue; do
  command -v "$tool" >/dev/null || skip "no $tool (scripts/install-deps.sh installs slurm-wlm and munge)"
done
[[ -d /usr/share/datasets/fashion-mnist ]] || skip "no /usr/share/datasets/fashion-mnist"

work=$(mktemp -d /tmp/minas-slurm.XXXXXX)
cluster=$work/cluster
export MINAS=$minas MINAS_RUN=$work/run MINAS_ADVERTISE=127.0.0.1 SLURM_CONF=$cluster/slurm.conf
mkdir -p "$MINAS_RUN"
ok=0
finish() {
  if [[ $ok -ne 1 ]]; then
    echo "--- trials"
    sql_all "SELECT id, status, attempt, worker_id, started_at, finished_at FROM trials" || true
    echo "--- job output and cluster logs ($work)"
    tail -n 40 "$work"/*.out "$cluster"/log/*.log 2>/dev/null || true
  fi
  bash "$root/deploy/slurm/local-cluster.sh" stop "$cluster" >/dev/null 2>&1 || true
  [[ $ok -eq 1 ]] && rm -rf "$work"
}
trap finish EXIT
fail() { echo "FAILED: $*"; exit 1; }
step() { echo "[$(date +%T)] $*"; }
sql() { "$minas" sql --db "$MINAS_RUN/minas.db" --format csv "$1" 2>/dev/null | tail -n 1 | tr -d '\r'; }
sql_all() { "$minas" sql --db "$MINAS_RUN/minas.db" --format csv "$1" 2>&1; }
in_queue() { squeue -h -j "$1" -o %i 2>/dev/null | grep -q .; }
wait_for() {  # SECONDS WHAT COMMAND...: polls COMMAND; SECONDS is a hang guard only
  local limit=$1 what=$2
  shift 2
  local until=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < until)) || fail "$what: waited $limit s"
    sleep 0.2
  done
}

bash "$root/deploy/slurm/local-cluster.sh" start "$cluster"
cd "$work"

# A small real data set, so that a trial trains in seconds: the first 6,000
# training and 500 test images of Fashion-MNIST, in the IDX layout minas reads
# from a folder; 500 of the training images are held out for validation. A
# trial trains for about 4 s on one core (longer on a loaded machine): long
# enough that the cancel below, which Slurm takes about a second to deliver,
# lands while it trains.
mkdir -p "$work/data"
python3 - "$work/data" <<'PY'
import gzip, struct, sys
src, out = "/usr/share/datasets/fashion-mnist", sys.argv[1]
for name, n in (("train", 6000), ("t10k", 500)):
    for kind, item in (("images-idx3", 28 * 28), ("labels-idx1", 1)):
        with gzip.open(f"{src}/{name}-{kind}-ubyte.gz", "rb") as f:
            magic, count = struct.unpack(">II", f.read(8))
            dims = f.read(8) if kind.startswith("images") else b""
            body = f.read(n * item)
        with open(f"{out}/{name}-{kind}-ubyte", "wb") as f:
            f.write(struct.pack(">II", magic, n) + dims + body)
PY
echo '{"val_size": 500, "batch": 100}' >"$work/recipe.json"

trials=6
step "controller job: a random search of $trials one-epoch trials"
ctl=$(sbatch --parsable "$root/deploy/slurm/controller.sbatch" --name slurm-e2e --space small \
  --data "$work/data" --recipe "$work/recipe.json" --strategy random --trials $trials \
  --fidelity 1 --heartbeat-ms 500)
step "worker job 1"
w1=$(sbatch --parsable --cpus-per-task=1 "$root/deploy/slurm/workers.sbatch" --pool cpus)

done_count() { sql "SELECT count(*) FROM trials WHERE status = 'done'"; }
two_done() { [[ $(done_count) -ge 2 ]]; }
# A trial in the first quarter of its training, so the cancel reaches it while
# it trains: a quarter of what the trials done so far took, measured on this
# machine as it is now. (One cancelled in its last moments, while it is
# evaluated, finishes and reports instead: no work is thrown away, but nothing
# is re-queued.)
now_sql="(julianday('now') - 2440587.5) * 86400"
fresh() {
  victim=$(sql "SELECT id FROM trials WHERE status = 'running' AND started_at > $now_sql -
                  (SELECT avg(finished_at - started_at) / 4 FROM trials WHERE status = 'done')
                ORDER BY started_at DESC LIMIT 1")
  [[ $victim =~ ^[0-9]+$ ]]  # a CSV of no rows is its header alone
}
wait_for 400 "two trials done" two_done
step "a trial takes $(sql "SELECT round(avg(finished_at - started_at), 1) FROM trials WHERE status = 'done'") s here"
wait_for 120 "a trial in the first quarter of its training" fresh
before=$(done_count)
step "scancel worker job 1 ($before done, trial $victim running)"
scancel "$w1"
w1_gone() { ! in_queue "$w1"; }
wait_for 60 "worker job 1 ended" w1_gone
in_queue "$ctl" || fail "the controller job ended with the workers"
requeued() { [[ $(sql "SELECT count(*) FROM trials WHERE id = $victim AND status = 'queued' AND attempt >= 1") -eq 1 ]]; }
wait_for 30 "trial $victim back in the queue" requeued
[[ $(sql "SELECT count(*) FROM trials WHERE status = 'running'") -eq 0 ]] || fail "a trial still running"

step "worker job 2 finishes the budget"
w2=$(sbatch --parsable --cpus-per-task=1 "$root/deploy/slurm/workers.sbatch" --pool cpus)
ctl_gone() { ! in_queue "$ctl"; }
wait_for 600 "the controller job ended" ctl_gone
w2_gone() { ! in_queue "$w2"; }
wait_for 60 "worker job 2 ended after the goodbye" w2_gone

step "checks"
[[ $(sql "SELECT count(*) FROM trials") -eq $trials ]] || fail "not $trials trials"
[[ $(sql "SELECT count(*) FROM trials WHERE status = 'done'") -eq $trials ]] || fail "not all done"
[[ $(sql "SELECT count(DISTINCT arch_key) FROM trials") -eq $trials ]] || fail "a repeated trial"
[[ $(sql "SELECT count(*) FROM trials WHERE attempt >= 1") -ge 1 ]] || fail "no trial was re-queued"
[[ $(sql "SELECT count(DISTINCT w.name) FROM trials t JOIN workers w ON w.id = t.worker_id") -eq 2 ]] ||
  fail "the trials were not trained by the two worker jobs"
[[ $(sql "SELECT count(*) FROM workers WHERE pool = 'cpus'") -eq 2 ]] || fail "workers not in pool cpus"
grep -q "\"done\":$trials" "minas-controller-$ctl.out" || fail "the controller did not report $trials done"
[[ -e $MINAS_RUN/controller.ended && ! -e $MINAS_RUN/controller.endpoint ]] ||
  fail "the controller's end is not marked in $MINAS_RUN"
[[ $(stat -c %a "$MINAS_RUN/keys/controller.key") == 600 ]] || fail "the controller's secret key is not 0600"
ok=1
echo "1 passed, 0 failed"
