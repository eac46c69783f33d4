#!/usr/bin/env bash
# Install into .venv/, prepare DAGSTER_HOME and the data root, run the main job on the embedded default, drop
# sample pages into the scan inbox, then serve the Dagster UI (and its daemon) on 127.0.0.1:${PORT:-3000}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export OCR_ASSETS_DATA_ROOT="${OCR_ASSETS_DATA_ROOT:-$PWD/var}"
export DAGSTER_HOME="${DAGSTER_HOME:-$OCR_ASSETS_DATA_ROOT/dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
.venv/bin/dagster instance concurrency set gpu 1 >/dev/null 2>&1 || true
echo "data root: $OCR_ASSETS_DATA_ROOT   DAGSTER_HOME: $DAGSTER_HOME"
# Progress a person can follow: the console logger at INFO (each asset's own lines: lines rendered, accepted and
# quarantined, base model, epochs, CER, promotion; warnings and errors) instead of Dagster's hundreds of DEBUG
# events, without library warnings and weight-loading bars. OCR_ASSETS_LOG_LEVEL=DEBUG brings everything back.
LOG_LEVEL="${OCR_ASSETS_LOG_LEVEL:-INFO}"
RUN_CONFIG="$DAGSTER_HOME/up-run-config.yaml"
printf 'loggers:\n  console:\n    config:\n      log_level: %s\n' "$LOG_LEVEL" > "$RUN_CONFIG"
if [ "$LOG_LEVEL" != DEBUG ]; then
  export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}" HF_HUB_DISABLE_PROGRESS_BARS="${HF_HUB_DISABLE_PROGRESS_BARS:-1}"
fi
time .venv/bin/dagster job execute -m ocr_assets.definitions -j main_job -c "$RUN_CONFIG"
# Three synthetic classical pages (running header, footnotes, vocalised or bare) arrive in the scan inbox; the
# inbox sensor turns them into partitions and OCRs them once the UI's daemon runs.
export OCR_ASSETS_INBOX="${OCR_ASSETS_INBOX:-$OCR_ASSETS_DATA_ROOT/inbox}"
mkdir -p "$OCR_ASSETS_INBOX"
.venv/bin/python -c "import sys; from ocr_assets.synth.pages import render_page
for seed in (1, 2, 3): render_page(seed).image.save(f'{sys.argv[1]}/sample-page-{seed}.png')" "$OCR_ASSETS_INBOX"
if [ "${OCR_ASSETS_NO_UI:-0}" = 1 ]; then
  # The same library, once, without the daemon (pages just written: no settle wait): corpus under the data root.
  OCR_ASSETS_INBOX_SETTLE_S=0 .venv/bin/ocr-assets corpus
  exit 0
fi
set -m  # job control, so the backgrounded UI honours SIGTERM when a wrapper stops it
echo "Dagster UI: http://127.0.0.1:${PORT:-3000}"
exec .venv/bin/dagster dev -h 127.0.0.1 -p "${PORT:-3000}" -w workspace.yaml
