#!/usr/bin/env bash
# `ocr-assets recognize --device cuda`, whole process, over growing folders of the same line PNGs: 1 line (start-up),
# then COPIES copies of LINES for each COPIES given; ROUNDS runs each, alternating sizes. Prints each run and the
# CLI's reading rate once under way: the extra lines of the largest folder over the smallest multi-line one,
# divided by the extra seconds (start-up and a process's first-call costs cancel out), from the fastest of each size's
# runs (the first run of a fresh machine pays its cold file cache and bytecode compilation).
# Usage (on the GPU machine, after scripts/gpu/env.sh): bash benchmarks/gpu_cli_scaling.sh LINES [ROUNDS] [COPIES...]
#   e.g. bash benchmarks/gpu_cli_scaling.sh .gpu2/sd48/ocr_gs_print 2 10 20 40   (DEVICE=cpu: a check of the script)
set -euo pipefail
LINES=$1; ROUNDS=${2:-2}; shift $(( $# >= 2 ? 2 : $# )); SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(10 20)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
mkdir -p "$T/one/x" && cp "$(find "$LINES" -name '*.png' | sort | head -1)" "$T/one/x/"
for n in "${SIZES[@]}"; do
  mkdir -p "$T/c$n" && for k in $(seq 0 $((n - 1))); do cp -r "$LINES" "$T/c$n/copy$k"; done
done
echo "host: $(nproc) cores, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
run() {  # folder, label
  local s e
  s=$(date +%s.%N)
  (cd /tmp && python3 -m ocr_assets.cli recognize "$1" --out "$T/out.jsonl" --model default --device "${DEVICE:-cuda}" \
    >/dev/null 2>&1) || { echo "$2: failed"; return 1; }
  e=$(date +%s.%N)
  echo "$2 $(find "$1" -name '*.png' | wc -l) $(python3 -c "print(round($e - $s, 3))")" | tee -a "$T/runs"
}
for r in $(seq "$ROUNDS"); do
  run "$T/one" start-up >/dev/null
  for n in "${SIZES[@]}"; do run "$T/c$n" "copies$n" >/dev/null; done
done
python3 - "$T/runs" <<'PY'
import sys
from collections import defaultdict
runs = defaultdict(list)
files = {}
for line in open(sys.argv[1]):
    label, n, s = line.split()
    runs[label].append(float(s)); files[label] = int(n)
for label, times in runs.items():
    print(f"{label}: {files[label]:,} lines, whole process " + " / ".join(f"{t:.2f}" for t in times) + " s")
sizes = sorted((files[l], min(t)) for l, t in runs.items() if l != "start-up")
if len(sizes) >= 2:
    (n0, t0), (n1, t1) = sizes[0], sizes[-1]
    print(f"reading once under way: {(n1 - n0) / (t1 - t0):,.0f} lines/s ({n1 - n0:,} more lines in {t1 - t0:.2f} s more)")
if "start-up" in runs:
    m = min(runs["start-up"])
    for n, t in sizes:
        print(f"{n:,} lines: {n / t:,.0f} lines/s whole process, {n / (t - m):,.0f} after the 1-line start-up ({m:.2f} s)")
PY
