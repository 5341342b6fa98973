#!/usr/bin/env bash
# Trains the four scaled patch-method recipes under one shared budget and prints the table
# for docs/results.md. Usage: bash benchmarks/run_patch_evidence.sh [DATA_ROOT] [OUT_DIR]
# The budget (same for all four): the first LIMIT labelled images of rsna-100px split 90/10
# with split seed 0, EPOCHS epochs of SAMPLES random patches each.
set -euo pipefail
DATA=${1:-../shared/data/rsna-100px}
OUT=${2:-runs/patch-evidence}
LIMIT=${LIMIT:-3000}
EPOCHS=${EPOCHS:-4}
SAMPLES=${SAMPLES:-4000}
mkdir -p "$OUT"
for name in ${MODELS:-resnet18 resnet18-cam resnet18-cbam inception-v4}; do
  if [ ! -f "$OUT/$name/val_summary.json" ]; then
    resume=""; [ -f "$OUT/$name/checkpoint.pt" ] && resume="--resume"
    boneage train "configs/m2-$name-rsna100.yaml" data.root="$DATA" data.limit="$LIMIT" \
      train.epochs="$EPOCHS" train.early_stopping=null patches.samples_per_epoch="$SAMPLES" \
      --out "$OUT/$name" --quiet $resume
  fi
done
boneage compare $(for n in ${MODELS:-resnet18 resnet18-cam resnet18-cbam inception-v4}; do [ -f "$OUT/$n/model.safetensors" ] && echo "$OUT/$n"; done)
