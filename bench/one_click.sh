#!/usr/bin/env bash
# The one-click search against its bar (experiments/one-click.md): `minas
# search` with its defaults, once per seed, and the same budget spent on random
# search in the same pipeline (the same trials, final choice and training), seeds
# interleaved so that drift on a shared machine falls on all arms alike.
# Prints a markdown table: per run the exported model's test accuracy, its
# parameters and MACs, the trials, the architectures screened, the final
# training's epochs and the wall clock of the whole command; then mean and
# standard deviation per arm.
#
#   bash bench/one_click.sh [SEEDS] [BUDGET] [WORKDIR]
#       SEEDS default "0 1 2", BUDGET default 20m, WORKDIR default runs/bench-one-click
#   MINAS=/path/to/minas to run another binary (default build/minas);
#   SEARCH_ARGS="..." adds options to every search (e.g. --data FOLDER);
#   ARMS="NAME:OPTIONS;NAME:OPTIONS" the arms compared (default
#   "default:;random:--strategy random --screen 0": the defaults, and random
#   search without screening); e.g. "screened:--pipeline screened;classic:
#   --pipeline classic;random:--strategy random --screen 0".
#   TORCH_REF=path/to/torch_ref.py (default ../shared/bench/torch_ref.py):
#   once, beside the arms, the hand-designed reference network at width 32
#   trained by PyTorch on the same machine for as many epochs as fit in the
#   same budget (timed from a 1-epoch run first); skipped, and said so, when
#   /usr/bin/python3 cannot import torch (bash scripts/install-deps.sh --torch).
#
# Resumable: each finished run leaves its row in WORKDIR/NAME.row beside a key
# (the binary's checksum, the arm's options, the budget and SEARCH_ARGS); a
# later call with the same key prints that row again instead of rerunning it,
# so the 3 seeds x arms (an hour per seed and arm pair) can be spread over
# several sittings of a machine with nothing else on it. The reference's
# line is kept the same way (WORKDIR/torch_ref-BUDGET.line). FRESH=1 reruns all.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
seeds="${1:-0 1 2}"
budget="${2:-20m}"
work="${3:-$here/runs/bench-one-click}"
minas="${MINAS:-$here/build/minas}"
[[ -x "$minas" ]] || { echo "bench/one_click.sh: build first (bash scripts/build.sh)" >&2; exit 1; }
mkdir -p "$work"

field() {  # field REPORT NAME: the value of the row "| NAME | VALUE |" of a report
  grep -m1 -F "| $2 | " "$1" | sed -e "s/^| $2 | //" -e 's/ |$//'  # the value may hold \|
}

arms="${ARMS:-default:;random:--strategy random --screen 0}"
names=()
declare -A options
IFS=';' read -r -a list <<<"$arms"
for arm in "${list[@]}"; do
  n="${arm%%:*}"
  n="${n// /}"
  [[ "$n" =~ ^[a-z0-9_-]+$ ]] || { echo "bench/one_click.sh: bad arm name '$n' in ARMS" >&2; exit 2; }
  names+=("$n")
  options[$n]="${arm#*:}"
done

sum=$(sha256sum "$minas" | cut -d' ' -f1)
rows=()
echo "budget=$budget seeds=$seeds cores=$(nproc) stores=$work/ARM-seedN.db arms=$arms"
for seed in $seeds; do
  for strategy in "${names[@]}"; do
    name="$strategy-seed$seed"
    out="$work/$name"
    log="$work/$name.log"
    key="minas=$sum options=${options[$strategy]} budget=$budget search_args=${SEARCH_ARGS:-}"
    if [[ -z "${FRESH:-}" && -f "$work/$name.row" && -f "$work/$name.key" ]] &&
        [[ "$(cat "$work/$name.key")" == "$key" ]]; then
      row="$(cat "$work/$name.row")"
      rows+=("$row")
      echo "$row (kept from an earlier call: $work/$name.row)"
      continue
    fi
    # A fresh store per run: an existing experiment of the same name would resume.
    db="$work/$name.db"
    rm -rf "$out" "$work/$name.row" "$work/$name.key" "$db" "$db-wal" "$db-shm"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086  # an arm's options are words
    if ! "$minas" search --db "$db" --name "$name" --seed "$seed" ${options[$strategy]} \
        --budget "$budget" --out "$out" ${SEARCH_ARGS:-} >"$log" 2>&1; then
      echo "bench/one_click.sh: $name failed; its log: $log" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    report="$out/report.md"
    acc=$(field "$report" "test accuracy")
    params=$(field "$report" "parameters")
    macs=$(field "$report" "MACs per image")
    final=$(field "$report" "final training")
    arch=$(field "$report" "architecture")
    # The command's last line is its summary, JSON: {"done":N,"failed":N,"pruned":N,...}
    num() { tail -n 1 "$log" | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
    summary="$(num "done") done, $(num pruned) pruned, $(num failed) failed"
    # Screened: the last progress line's "screened N of M", else none.
    # (A run without screening has no such line: grep's status must not end the script.)
    screened=$({ grep -o 'screened [0-9]* of [0-9]*' "$log" || true; } | tail -n 1 | cut -d' ' -f2)
    row="| $strategy | $seed | $acc | $params | $macs | ${final%%,*} | $(printf '%.0f' "$wall") | $arch | $summary | ${screened:-0} |"
    rows+=("$row")
    printf '%s\n' "$row" >"$work/$name.row"
    printf '%s\n' "$key" >"$work/$name.key"
    echo "$row"
  done
done

# The hand-designed reference: PyTorch, width 32, epochs that fit in the budget.
ref="${TORCH_REF:-$here/../shared/bench/torch_ref.py}"
kept="$work/torch_ref-$budget.line"
if [[ -z "${FRESH:-}" && -f "$kept" ]]; then
  echo "$(cat "$kept") (kept from an earlier call: $kept)"
elif [[ -f "$ref" ]] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
  budget_s=$(echo "$budget" | awk '{ s = 0; n = ""
    for (i = 1; i <= length($0); ++i) { c = substr($0, i, 1)
      if (c ~ /[0-9.]/) n = n c
      else { s += n * (c == "h" ? 3600 : c == "m" ? 60 : 1); n = "" } }
    print s + (n == "" ? 0 : n) }')
  one=$(/usr/bin/python3 "$ref" --width 32 --epochs 1)
  epoch_s=$(echo "$one" | grep -o 'train_s=[0-9.]*' | cut -d= -f2)
  epochs=$(awk -v b="$budget_s" -v e="$epoch_s" 'BEGIN { n = int(b / e); print (n < 1 ? 1 : n) }')
  start=$(date +%s.%N)
  line=$(/usr/bin/python3 "$ref" --width 32 --epochs "$epochs")
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  echo "torch_ref width 32: $epochs epochs in the $budget budget (1 epoch: ${epoch_s} s): $line (wall $(printf '%.0f' "$wall") s)" |
    tee "$kept"
else
  echo "torch_ref: skipped (no $ref, or /usr/bin/python3 cannot import torch: bash scripts/install-deps.sh --torch)"
fi

echo
echo "| arm | seed | test accuracy | params | MACs | final training | wall s | architecture | trials | screened |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
for strategy in "${names[@]}"; do
  printf '%s\n' "${rows[@]}" | awk -F'|' -v s="$strategy" '
    $2 ~ "^ *" s " *$" { v = $4; gsub(/[ %]/, "", v); x[n++] = v; sum += v }
    END {
      if (!n) exit
      m = sum / n; ss = 0
      for (i = 0; i < n; ++i) ss += (x[i] - m) ^ 2
      sd = 0
      if (n > 1) sd = sqrt(ss / (n - 1))
      printf "%s: test accuracy mean %.2f%% std %.2f over %d run(s)\n", s, m, sd, n
    }'
done
