#!/usr/bin/env bash
# Per-book Kraken binary datasets (Arrow IPC) for the leave-one-book-out folds, from prepare_folds.py's manifests:
# .kraken/arrow/<Book>.train.arrow and <Book>.val.arrow (every 10th line). Fold B trains on the four other books'
# train files and stops early on their val files (gpu_train.sh); B's own two files together are its test set.
#
#   .venv/bin/python benchmarks/kraken/prepare_folds.py && bash benchmarks/kraken/compile_folds.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .kraken/arrow
for list in .kraken/lists/*.train .kraken/lists/*.val; do
  name=$(basename "$list")
  .kraken/venv/bin/ketos --workers "${WORKERS:-2}" compile -f path -F "$list" -o ".kraken/arrow/$name.arrow"
done
ls -la .kraken/arrow
