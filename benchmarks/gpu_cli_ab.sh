#!/usr/bin/env bash
# `ocr-assets recognize --device cuda` of two code trees, alternately, on the same GPU and the same files:
#   start-up (a 1-line folder, whole process) and whole process over COPIES copies of a folder of line PNGs
#   (*/*.png beside *.gt.txt), with the CLI's own reading rate, then errors and CER_norm of each output.
# Usage (on the GPU machine, after scripts/gpu/env.sh): bash benchmarks/gpu_cli_ab.sh OLD_CODE LINES [COPIES] [ROUNDS]
#   (DEVICE=cpu runs both on the CPU: a check of the script, not a GPU figure; SKIP_STARTUP=1 leaves out the 1-line runs)
#   OLD_CODE: a folder holding an older `ocr_assets` package (e.g. `git archive OLD ocr_assets | tar -x -C DIR`);
#   the other tree is this checkout. Each reads its own tree's shipped model (OLD's weights are copied from this
#   checkout when it has none).
set -euo pipefail
OLD=$(cd "$1" && pwd); LINES=$2; COPIES=${3:-10}; ROUNDS=${4:-2}; NEW=$PWD
[ -f "$OLD/ocr_assets/shipped/compact-default/model.safetensors" ] || \
  cp ocr_assets/shipped/compact-default/model.safetensors "$OLD/ocr_assets/shipped/compact-default/"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
mkdir -p "$T/all" && for k in $(seq 0 $((COPIES - 1))); do cp -r "$LINES" "$T/all/copy$k"; done
mkdir -p "$T/one/x" && cp "$(find "$LINES" -name '*.png' | sort | head -1)" "$T/one/x/"
echo "host: $(nproc) cores, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true); files: $(find "$T/all" -name '*.png' | wc -l)"
run() {  # code tree, label, folder, output
  local s e
  s=$(date +%s.%N)
  progress=$(cd /tmp && env PYTHONSAFEPATH=1 PYTHONPATH="$1${PYTHONPATH:+:$PYTHONPATH}" python3 -m ocr_assets.cli recognize \
    "$3" --out "$4" --model default --device "${DEVICE:-cuda}" 2>&1 | tr '\r' '\n' | { grep "recognize:" || true; } | tail -2 \
    | tr '\n' ' ')
  e=$(date +%s.%N)
  echo "$2: whole process $(python3 -c "print(round($e - $s, 2))") s | $progress"
}
for r in $(seq "$ROUNDS"); do
  for which in old new; do
    code=$NEW; [ $which = old ] && code=$OLD
    [ -n "${SKIP_STARTUP:-}" ] || run "$code" "start-up (1 line), $which" "$T/one" "$T/one_$which.jsonl"
    run "$code" "all files, $which" "$T/all" "$T/o_$which.jsonl"
  done
done
python3 - "$T" <<'PY'
import json, sys
from pathlib import Path
from ocr_assets.metrics import cer_norm
root = Path(sys.argv[1])
for run in ("old", "new"):
    rows = [json.loads(l) for l in open(root / f"o_{run}.jsonl", encoding="utf-8")]
    refs = [(root / "all" / r["image"]).with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8").strip() for r in rows]
    print(run, len(rows), "rows, errors", sum(bool(r.get("error")) for r in rows), "CER_norm",
          round(cer_norm(refs, [r["text"] for r in rows]), 5))
PY
