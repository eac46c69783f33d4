#!/usr/bin/env bash
# Stage 2 on a lent GPU box: from the stage-1 model, one run per leave-one-book-out fold plus one on all five books,
# concurrently on the GPU(s); each mixes its real books (3x, their mark-free lines with marks optional) with synthetic lines. Then unseen-book and vocalised
# evaluation, GPU throughput, and the all-books model copied to $OUT.
set -euo pipefail
source scripts/gpu/env.sh
CPUS=$(nproc); INIT=${INIT:-$KIT/stage1}; EPOCHS=${1:-5}; SECONDS_LIMIT=${2:-330}
python3 -m ocr_assets.training.pretrain render --out $W/mix/mix.parquet --count 16000 --seed 20 --workers "$CPUS"
[ -f $W/val/synth_val.parquet ] || python3 -m ocr_assets.training.pretrain render --out $W/val/synth_val.parquet --count 600 --seed 2 --workers "$CPUS"
[ -f $W/heldout/vocalised.parquet ] || python3 -m ocr_assets.training.pretrain render --out $W/heldout/vocalised.parquet --count 1000 --seed 3 \
  --workers "$CPUS" --vocalised-fraction 1.0 --exclude-fonts "" --only-fonts Scheherazade-Regular,Scheherazade-Bold
python3 scripts/gpu/make_folds.py $KIT/real $W/folds
# SKIP_ALL=1 leaves out the all-books run (only the leave-one-book-out folds train); ONLY_FOLDS="A B" trains those
# folds only; MARKS_OPTIONAL=0 trains the real lines' marks like any other label (the recipe before session 11);
# SEED=N trains with another seed (batch order, augmentation; the same lines) to see a run's spread; its runs go to
# their own folders, so a warm box does not resume (and so skip) the finished runs of another seed.
RUNS=${SEED:+_seed$SEED}
FOLDS=${ONLY_FOLDS:-$(ls $W/folds | { [ -n "${SKIP_ALL:-}" ] && grep -v -x ALL || cat; })}; N=$(echo $FOLDS | wc -w); i=0
for f in $FOLDS; do
  R=$W/folds/$f/train_real.parquet
  OPTIONAL=(--marks-optional "$R"); [ "${MARKS_OPTIONAL:-1}" = 0 ] && OPTIONAL=()
  CUDA_VISIBLE_DEVICES=$(( i % NGPU )) timeout "$SECONDS_LIMIT" python3 -m ocr_assets.models.compact.train --init "$INIT" \
    --train $R,$R,$R,$W/mix/mix.parquet --val $W/folds/$f/val_real.parquet --out $W/runs$RUNS/$f --epochs "$EPOCHS" \
    --batch-size 96 --lr 6e-4 --num-workers $(( CPUS / N )) --augment --log-every 400 --checkpoint-every 400 "${OPTIONAL[@]}" ${SEED:+--seed "$SEED"} \
    > $W/runs_$f.log 2>&1 &
  i=$((i + 1))
done
wait || true
for f in $FOLDS; do echo "== $f"; { grep "epoch .* done" $W/runs_$f.log || echo "no epoch trained (a finished run resumed?)"; } | tail -2 | cut -c1-260
  python3 scripts/gpu/export.py $W/runs$RUNS/$f $W/models/$f; done
python3 scripts/gpu/evaluate_folds.py $KIT/fullres $W/models $W/heldout/vocalised.parquet $KIT/real "$OUT"
# Fold models come back too, for the CPU adaptation benchmark on a book they never saw.
# EXPORT_FOLDS names them (a call brings back at most 4 models of 14 MiB; EXPORT_FOLDS="" none).
for f in ${EXPORT_FOLDS-IbnQutayba.Adab Jahiz.Hayawan}; do python3 scripts/gpu/export.py $W/runs$RUNS/$f "$OUT/fold_$f"; done
if [ -z "${SKIP_ALL:-}" ] && [ -z "${ONLY_FOLDS:-}" ]; then
  python3 scripts/gpu/export.py $W/runs$RUNS/ALL "$OUT/model"
  cp $W/runs_ALL.log "$OUT/train_ALL.log"
fi
