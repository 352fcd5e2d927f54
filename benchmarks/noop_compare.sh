#!/bin/bash
# A no-op `diffparts run` on one store with an older commit's code and this checkout's, in turn
# (issue 20, docs/scale.md "What a no-op re-run reads"). Prints each run's stage lines; the
# records (seconds per stage, peak RSS) are in OUT/noop-<n>-<which>.out (`--json`).
#
#   benchmarks/noop_compare.sh STORE CORPUS OLD_COMMIT [ORDER (default: "old new new old")] [OUT (default: out)]
#
# The store must be up to date for the run's settings (a previous run with the same command);
# the older code is extracted with `git archive` into a temporary folder; each run is its own
# process with a temporary Prefect server (PREFECT_HOME under OUT), at nice 15, one thread.
set -euo pipefail
STORE=$(realpath "$1"); CORPUS=$(realpath "$2"); OLD=$3; ORDER=${4:-"old new new old"}; OUT=$(realpath -m "${5:-out}")
HERE=$(cd "$(dirname "$0")/.." && pwd)
BASE=$(mktemp -d)
trap 'rm -rf "$BASE"' EXIT
git -C "$HERE" archive "$OLD" | tar -x -C "$BASE"
mkdir -p "$OUT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
PY=${PYTHON:-$HERE/.venv/bin/python}
n=0
for which in $ORDER; do
  n=$((n + 1))
  if [ "$which" = old ]; then CODE=$BASE; else CODE=$HERE; fi
  echo "== run $n: $which code ($CODE)"
  (cd "$CODE" && PREFECT_HOME="$OUT/.prefect-noop" PYTHONPATH="$CODE/src:$CODE" nice -n 15 "$PY" -m diffparts.cli run \
     --corpus "$CORPUS" --store "$STORE" --embed-steps 20 --occlusion-cases 8 --json) > "$OUT/noop-$n-$which.out"
  grep -E "^(extract|segment|parts|embeddings|occlusion) +(skipped|done) +[0-9.]+ s" "$OUT/noop-$n-$which.out" || true
  grep -E '^\{' "$OUT/noop-$n-$which.out" | tail -1 | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("in stages", d["seconds"], "s; flow wall", d["wall_seconds"], "s")'
done
