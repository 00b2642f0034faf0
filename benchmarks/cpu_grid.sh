#!/usr/bin/env bash
# The CPU tables of benchmarks/README.md, one after the other (one torch thread each; run it on a
# quiet machine: nothing else alongside).  Each run writes OUTDIR/<network>_<mode>.md, which ends
# with its SPEC 5 check.
#
#   bash benchmarks/cpu_grid.sh [OUTDIR]        # default: benchmarks/out
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/out}"
mkdir -p "$out"
run() {  # name, then the arguments of bench_forward.py
  local name=$1; shift
  echo "== $name: python benchmarks/bench_forward.py $* ($(date -u +%H:%M:%S) UTC)"
  { echo "    python benchmarks/bench_forward.py $*"; echo
    python benchmarks/bench_forward.py "$@"; } > "$out/$name.md"
  grep -E "^  B=" "$out/$name.md" | grep -v "tuned=" || true
}
mpo=(--threads 1)
tr=(--network tr --ranks 4 8 --threads 1)
tucker=(--network tucker --in-dims 64 64 --out-dims 64 64 --ranks 16 32 --threads 1)
cp=(--network cp --ranks 64 256 --threads 1)
for net in mpo tr tucker cp; do
  declare -n a=$net
  run "${net}_eval" "${a[@]}" --repeats 5
  run "${net}_step" "${a[@]}" --mode step --repeats 3
  run "${net}_step_input_grad" "${a[@]}" --mode step --input-grad --repeats 3
done
echo "ALLDONE $(date -u +%H:%M:%S) UTC"
