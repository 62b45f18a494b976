#!/usr/bin/env bash
# Scribble models for autoPET V: the bundled point models fine-tuned with simulated scribbles
# (recipe scribbles_gaussian: 0-5 interactions per sample, each a stroke of the case's pool,
# shown as the point models see clicks), on 2 CPU cores. How petloop/models/phantom got its
# fdg_scribbles and psma_scribbles models.
#
#   FROM=petloop/models/phantom scripts/finetune_scribbles.sh [cpu|cuda]
#
# 1. The plans of FROM's models become the plans of two datasets made by `dataset phantoms`
#    straight into nnU-Net's preprocessed format, each case with its scribble pool: FDG_CASES FDG
#    phantoms of seed 201 and PSMA_CASES PSMA phantoms of seed 202 (the point models' training
#    seeds), whole adult bodies on the quick grid, a tenth of them negative controls.
# 2. fdg_scribbles from FROM's fdg_v4 and psma_scribbles from its psma_v2 (organ loss weight
#    0.1), at once, one thread each, within BUDGET seconds; lr LR, nnU-Net's poly schedule over
#    the epochs that fit, 50 iterations of batch 2 per epoch.
# 3. `models add-scribbles` copies them into the set OUT (FROM itself by default) and routes its
#    scribble steps to them.
set -euo pipefail
DEVICE=${1:-cpu}
PETLOOP=${PETLOOP:-.venv/bin/petloop}
FROM=${FROM:?give the model set to start from, e.g. FROM=petloop/models/phantom}
WORK=${WORK:-petloop_work/scribbles}
OUT=${OUT:-$FROM}
FDG_CASES=${FDG_CASES:-60}
PSMA_CASES=${PSMA_CASES:-40}
BUDGET=${BUDGET:-2400}
LR=${LR:-3e-3}
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
    --id 621 --name ScribblesFDG --plans-from $PLANS --workdir "$WORK"
$PETLOOP dataset phantoms --config "$WORK/configs/psma/phantom_config.json" \
    --cases "$PSMA_CASES" --id 622 --name ScribblesPSMA --plans-from $PLANS --workdir "$WORK"
cp "$(model "$FROM" fdg_v4)/dataset_fingerprint.json" "$PRE/Dataset621_ScribblesFDG/"
cp "$(model "$FROM" psma_v2)/dataset_fingerprint.json" "$PRE/Dataset622_ScribblesPSMA/"

export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
RUN=(--device "$DEVICE" --workdir "$WORK" --iters 50 --val-iters 5 --save-every 2 --lr "$LR"
     --epochs 1000 --organ-weight 0.1 --recipe scribbles_gaussian --time-budget "$BUDGET")
ck() { echo "$(model "$FROM" "$1")fold_all/checkpoint_final.pth"; }
OMP_NUM_THREADS=1 $PETLOOP train --dataset 621 --pretrained "$(ck fdg_v4)" "${RUN[@]}" \
    > "$WORK/fdg.log" 2>&1 &
OMP_NUM_THREADS=1 $PETLOOP train --dataset 622 --pretrained "$(ck psma_v2)" "${RUN[@]}" \
    > "$WORK/psma.log" 2>&1 &
wait

trainer=PetloopScribbleGaussianTrainer__petloopCPUPlans__3d_fullres
$PETLOOP models add-scribbles --models "$OUT" \
    --fdg "$RES/Dataset621_ScribblesFDG/$trainer" --psma "$RES/Dataset622_ScribblesPSMA/$trainer"
