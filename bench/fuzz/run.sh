#!/usr/bin/env bash
# libFuzzer over the readers of outside input: minas::read_json, proto::parse,
# Space::parse and Recipe::parse. Builds each target with Debian's clang-14
# (-fsanitize=fuzzer,address) from just the sources it needs (apart from the
# CMake build: CI needs no clang), seeds it from the repository's bad-input
# corpora and valid documents, runs it SECONDS, and reports executions, coverage
# and any finding. A finding's input is kept in bench/fuzz/crashes/.
#
#   bash bench/fuzz/run.sh [SECONDS] [TARGET...]     (default 60 s; json protocol space recipe)
#
# Exits 1 if any target found something.
set -euo pipefail
seconds=${1:-60}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: run.sh [SECONDS] [TARGET...]" >&2; exit 2; }
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(json protocol space recipe)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/bench/fuzz
out=$here/out            # builds and working corpora (not committed)
crashes=$here/crashes    # findings (committed with the report)
cd "$root"

# clang-14 and its fuzzer runtime: Debian's clang-14 and libclang-rt-14-dev.
runtime=$(ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
if ! command -v clang++-14 >/dev/null || [[ -z $runtime ]]; then
  echo "installing clang-14 and libclang-rt-14-dev (libFuzzer's runtime)"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends clang-14 libclang-rt-14-dev >/dev/null
fi
cxx=(clang++-14)
command -v ccache >/dev/null && cxx=(ccache clang++-14)
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -I"$root" -DNDEBUG)
mkdir -p "$out/obj/searchspace" "$crashes"

# The built-in spaces, embedded as the CMake build does.
files=$(ls "$root"/searchspace/spaces/*.json | sort | paste -sd ';')
cmake -DOUT="$out/obj/searchspace/builtin_spaces.cpp" "-DFILES=$files" \
  -P "$root/cmake/embed_spaces.cmake"

# Objects, each built once: the product's sources with fuzzer-no-link.
objects() {  # SOURCE...: prints the object files
  local src obj
  for src in "$@"; do
    obj=$out/obj/$(echo "$src" | tr / _).o
    if [[ ! -e $obj || $src -nt $obj ]]; then
      "${cxx[@]}" "${flags[@]}" -fsanitize=fuzzer-no-link,address -c "$src" -o "$obj"
    fi
    echo "$obj"
  done
}
# Every target links the searchspace library (the readers' common ground: read_json, its
# excerpts, text files, spaces), its sources read from its CMakeLists.txt so this list
# follows the build, and the one source of its own.
searchspace=$(sed -n '/^add_library(searchspace/,/)/p' searchspace/CMakeLists.txt |
  grep -o '[a-z_]*\.cpp' | sed 's|^|searchspace/|' | paste -sd ' ')
searchspace+=" $out/obj/searchspace/builtin_spaces.cpp"
declare -A sources=(
  [json]="$searchspace"
  [protocol]="controller/protocol.cpp $searchspace"
  [space]="$searchspace"
  [recipe]="trainer/recipe.cpp $searchspace"
)

# Seeds: the bad-input corpora (tests/controller/bad_messages.txt: CODE<TAB>PAYLOAD lines;
# tests/searchspace/bad_specs.txt: "=== name", "--- expect: ...", the document), valid
# documents, and one value nested 20,000 deep per target.
seed() {  # TARGET
  local dir=$out/seeds/$1
  rm -rf "$dir"
  mkdir -p "$dir"
  case $1 in
    protocol | json)
      awk -F'\t' -v d="$dir" '!/^#/ && NF >= 2 { f = d "/bad-" NR; printf "%s", substr($0, index($0, "\t") + 1) > f; close(f) }' \
        tests/controller/bad_messages.txt
      cp "$here"/seeds/protocol/*.json "$dir"/
      python3 -c 'import sys; sys.stdout.write("{\"v\": 1, \"type\": \"hello\", \"name\": \"w\", \"host\": \"h\", \"pid\": 1, \"minas\": \"0\", \"slots\": " + "[" * 20000 + "]" * 20000 + "}")' >"$dir/deep-hello"
      ;;&
    space | json)
      awk -v d="$dir" '/^=== / { name = $2; f = d "/bad-" name; next } /^--- expect:/ { next } f != "" { print > f }' \
        tests/searchspace/bad_specs.txt
      cp "$root"/searchspace/spaces/*.json "$dir"/
      python3 -c 'import sys; sys.stdout.write("{\"name\": \"x\", \"input\": " + "[" * 20000 + "]" * 20000 + "}")' >"$dir/deep-space"
      ;;&
    recipe | json)
      cp "$here"/seeds/recipe/*.json "$dir"/
      python3 -c 'import sys; sys.stdout.write("{\"epochs\": " + "[" * 20000 + "]" * 20000 + "}")' >"$dir/deep-recipe"
      ;;
  esac
}

# A dictionary from the sources: every field and value name the readers know.
grep -ho '"[a-z_][a-z0-9_]*"' controller/protocol.cpp trainer/recipe.cpp searchspace/space.cpp \
  searchspace/layer_graph.cpp searchspace/cell.cpp searchspace/chain.cpp | sort -u |
  sed 's/"/\\"/g; s/.*/"&"/' >"$out/minas.dict"
printf '%s\n' '"{"' '"}"' '"["' '"]"' '":"' '","' '"true"' '"false"' '"null"' '"1e308"' \
  '"-1"' '"9223372036854775807"' '"\\u0000"' '"\\ud800"' >>"$out/minas.dict"

status=0
summary=()
for t in "${targets[@]}"; do
  [[ -n ${sources[$t]:-} ]] || { echo "unknown target $t (json protocol space recipe)" >&2; exit 2; }
  echo "== $t: building"
  # shellcheck disable=SC2086
  mapfile -t objs < <(objects ${sources[$t]})
  bin=$out/fuzz_$t
  "${cxx[@]}" "${flags[@]}" -fsanitize=fuzzer,address "$here/fuzz_$t.cpp" "${objs[@]}" -o "$bin"
  seed "$t"
  corpus=$out/corpus/$t
  mkdir -p "$corpus"
  log=$out/$t.log
  echo "== $t: fuzzing for $seconds s (log $log)"
  rc=0
  MINAS_FUZZ_CRASHES=$crashes MINAS_FUZZ_TARGET=$t \
  "$bin" -max_total_time="$seconds" -max_len=100000 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -dict="$out/minas.dict" -artifact_prefix="$crashes/$t-" \
    "$corpus" "$out/seeds/$t" >"$log" 2>&1 || rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo "?")
  units=$(find "$corpus" -type f | wc -l)
  line="$t: $runs runs ($speed/s), coverage $cov, corpus $units"
  found=0
  # Broken rules the run went on after (one line each, input kept by the target).
  while IFS= read -r f; do
    line+=$'\n'"  found (went on): ${f#FINDING: }"
    found=1
  done < <(grep -E '^FINDING: ' "$log" | cut -c1-200)
  if [[ $rc -ne 0 ]]; then
    what=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY: |terminate called|Assertion' "$log" | cut -c1-160 || true)
    detail=$(grep -m1 -E '^  what\(\): ' "$log" | cut -c1-160 || true)
    [[ -n $detail ]] && what+=" (${detail#  })"
    saved=$(grep -o "Test unit written to [^ ]*" "$log" | tail -n 1 | sed 's/Test unit written to //')
    line+=$'\n'"  found (stopped): ${what:-exit $rc} -> ${saved:-no input saved}"
    found=1
  fi
  [[ $found -eq 1 ]] && status=1 || line+=": nothing found"
  summary+=("$line")
done
echo
echo "== summary ($seconds s a target)"
printf '%s\n' "${summary[@]}"
exit $status
