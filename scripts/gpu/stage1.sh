#!/usr/bin/env bash
# Stage 1 (synthetic pretraining) on a lent GPU box: render shards with every core, train on all GPUs (DDP).
# Usage: scripts/gpu/stage1.sh LINES EPOCHS   (outputs under var/gpu; the best model is copied to $OUT)
# INIT=DIR continues from an earlier stage-1 model (carried back from a previous call) on newly rendered lines;
# SEED picks the lines (default 10, the first call's). DEADLINE=S sizes training from what rendering left: it trains
# until S seconds after the script started less EXPORT_MARGIN (default 45 s for the export and copy); without it,
# TRAIN_SECONDS (default 300). Rendering speed differs 2x between hosts, so a fixed budget can overrun a call.
# EPOCHS=auto fits whole epochs into that time at RATE samples/s (default 2500, about the slowest host seen), so the
# cosine schedule ends when the time does.
set -euo pipefail
source scripts/gpu/env.sh
LINES=${1:-60000}; EPOCHS=${2:-8}; CPUS=$(nproc)
python3 -m ocr_assets.training.pretrain render --out $W/synth/s0.parquet --count "$LINES" --seed "${SEED:-10}" --workers "$CPUS"
python3 -m ocr_assets.training.pretrain render --out $W/val/synth_val.parquet --count 1500 --seed 2 --workers "$CPUS"
python3 -m ocr_assets.training.pretrain render --out $W/heldout/vocalised.parquet --count 1000 --seed 3 --workers "$CPUS" \
  --vocalised-fraction 1.0 --exclude-fonts "" --only-fonts Scheherazade-Regular,Scheherazade-Bold
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
[ -n "${DEADLINE:-}" ] && TRAIN_SECONDS=$(( DEADLINE - SECONDS - ${EXPORT_MARGIN:-45} ))
if [ "$EPOCHS" = auto ]; then EPOCHS=$(( TRAIN_SECONDS * ${RATE:-2500} / LINES )); (( EPOCHS >= 1 )) || EPOCHS=1; fi
echo "stage1: rendering took ${SECONDS} s; training $EPOCHS epochs for at most ${TRAIN_SECONDS} s"
timeout "$TRAIN_SECONDS" torchrun --standalone --nproc_per_node="$NGPU" -m ocr_assets.models.compact.train \
  --train $W/synth --val $W/val --out $W/stage1 --epochs "$EPOCHS" --batch-size 128 --lr "${LR:-1.5e-3}" \
  ${INIT:+--init "$INIT"} --num-workers $(( CPUS / NGPU - 2 )) --augment --log-every 200 --checkpoint-every 500 --val-max-lines 1000 || echo "stage1 stopped: $?"
python3 scripts/gpu/export.py $W/stage1 $W/stage1_best && python3 scripts/gpu/export.py $W/stage1 "$OUT/stage1"; cp $W/stage1/history.json "$OUT/stage1_history.json" 2>/dev/null || true
