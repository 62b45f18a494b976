#!/usr/bin/env bash
# Fine-tune a model set on adult phantoms: how the bundled set (petloop/models/phantom) was made
# from the set before it (trained on miniature bodies), on 2 CPU cores.
#
#   FROM=<model set> scripts/finetune_adult.sh [cpu|cuda]
#
# 1. The plans of FROM's models (the same network and patch, so its weights load) become the
#    plans of two datasets made by `dataset phantoms` straight into nnU-Net's preprocessed format
#    (no image files): FDG_CASES FDG phantoms of seed 201 and PSMA_CASES PSMA phantoms of seed
#    202, whole adult bodies on the quick grid (168 x 128 x 256 at 3 x 3 x 4 mm, the plans'
#    spacing), a tenth of them negative controls.
# 2. v4 and v3 (organ loss weight 0.1) from FROM's weights at once, one thread each, within
#    FDG_BUDGET seconds; then v2 within PSMA_BUDGET seconds (two threads); lr LR, nnU-Net's poly
#    schedule over the epochs that fit, 50 iterations of batch 2 per epoch.
# 3. Export with the tracer classifier of FROM, BIRTH's birth-fg routing, the body crop and
#    a 10 s TTA budget; then `models calibrate --routing` fits the SUV thresholds and the FDG
#    hand-over on validation phantoms of seeds 9400 (FDG) and 9401 (PSMA) on the trunk grid.
set -euo pipefail
DEVICE=${1:-cpu}
PETLOOP=${PETLOOP:-.venv/bin/petloop}
FROM=${FROM:?give the model set to start from, e.g. FROM=petloop/models/phantom}
WORK=${WORK:-petloop_work/adult}
OUT=${OUT:-$WORK/set}
FDG_CASES=${FDG_CASES:-200}
PSMA_CASES=${PSMA_CASES:-100}
FDG_BUDGET=${FDG_BUDGET:-3600}
PSMA_BUDGET=${PSMA_BUDGET:-1500}
LR=${LR:-3e-3}
VAL_FDG=${VAL_FDG:-12}
VAL_PSMA=${VAL_PSMA:-8}
PRE=$WORK/nnUNet_preprocessed
PLANS=Dataset600_PhantomFDGPlans/petloopCPUPlans
RES=$WORK/nnUNet_results

model() { ls -d "$1"/"$2"/*/ | head -1; }
mkdir -p "$PRE/Dataset600_PhantomFDGPlans" "$WORK/configs"
src=$(model "$FROM" fdg_v4)
python3 - "$src" "$PRE/Dataset600_PhantomFDGPlans" <<'PY'
import json, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
plans = json.load(open(f"{src}/plans.json"))
plans["dataset_name"] = "Dataset600_PhantomFDGPlans"
json.dump(plans, open(f"{dst}/petloopCPUPlans.json", "w"), indent=1)
shutil.copy(f"{src}/dataset.json", dst)
PY
for t in fdg psma; do
  seed=$([ $t = fdg ] && echo 201 || echo 202)
  $PETLOOP phantom --out "$WORK/configs/$t" --cases 1 --tracer $t --seed "$seed" --preset quick \
      --negative-fraction 0.1 > /dev/null
done
$PETLOOP dataset phantoms --config "$WORK/configs/fdg/phantom_config.json" --cases "$FDG_CASES" \
    --id 611 --name AdultFDG --plans-from $PLANS --workdir "$WORK"
$PETLOOP dataset phantoms --config "$WORK/configs/psma/phantom_config.json" --cases "$PSMA_CASES" \
    --id 612 --name AdultPSMA --plans-from $PLANS --workdir "$WORK"
cp "$(model "$FROM" fdg_v4)/dataset_fingerprint.json" "$PRE/Dataset611_AdultFDG/"
cp "$(model "$FROM" psma_v2)/dataset_fingerprint.json" "$PRE/Dataset612_AdultPSMA/"

export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
RUN=(--device "$DEVICE" --workdir "$WORK" --iters 50 --val-iters 5 --save-every 2 --lr "$LR"
     --epochs 1000)
ck() { echo "$(model "$FROM" "$1")fold_all/checkpoint_final.pth"; }
OMP_NUM_THREADS=1 $PETLOOP train --dataset 611 --recipe v4 --organ-weight 0.1 \
    --pretrained "$(ck fdg_v4)" "${RUN[@]}" --time-budget "$FDG_BUDGET" > "$WORK/v4.log" 2>&1 &
OMP_NUM_THREADS=1 $PETLOOP train --dataset 611 --recipe v3 --organ-weight 0.1 \
    --pretrained "$(ck fdg_v3)" "${RUN[@]}" --time-budget "$FDG_BUDGET" > "$WORK/v3.log" 2>&1 &
wait
$PETLOOP train --dataset 612 --recipe v2 --pretrained "$(ck psma_v2)" "${RUN[@]}" \
    --time-budget "$PSMA_BUDGET" > "$WORK/v2.log" 2>&1

$PETLOOP models export --out "$OUT" \
    --fdg-v4 "$RES/Dataset611_AdultFDG/PetloopV4Trainer__petloopCPUPlans__3d_fullres" \
    --fdg-v3 "$RES/Dataset611_AdultFDG/PetloopV3Trainer__petloopCPUPlans__3d_fullres" \
    --psma-v2 "$RES/Dataset612_AdultPSMA/PetloopV2Trainer__petloopCPUPlans__3d_fullres" \
    --tracer-weights "$FROM/tracer_classifier.pt.gz" --name phantom --routing birth-fg \
    --window whole --mirrors 7 --budget 3 --crop body --tile-step 1 \
    --description "trained on synthetic adult phantoms only: not for patients; FDG routing \
birth-fg (v3 only once a lesion has been clicked) with its hand-over fitted on validation \
phantoms by models calibrate --routing"

$PETLOOP phantom --out "$WORK/val_fdg" --cases "$VAL_FDG" --tracer fdg --seed 9400 \
    --preset trunk --negative-fraction 0.2
$PETLOOP phantom --out "$WORK/val_psma" --cases "$VAL_PSMA" --tracer psma --seed 9401 \
    --preset trunk --negative-fraction 0.2
$PETLOOP models calibrate --models "$OUT" --data "$WORK/val_fdg" --data "$WORK/val_psma" \
    --routing --device "$DEVICE" --mirrors 0
