#!/usr/bin/env bash
# Trains several recipes under one shared budget and prints a comparison table.
#   bash benchmarks/run_evidence.sh OUT_DIR RECIPE.yaml [RECIPE.yaml ...]
# Budget, the same for every recipe (environment variables):
#   DATA (default ../shared/data/rsna-100px), LIMIT (first N labelled images, default all),
#   EPOCHS (default: the recipe's), EXTRA (more KEY=VALUE overrides, e.g. patches.samples_per_epoch=3000).
# The split is each recipe's own (val_fraction 0.1, split_seed 0 in every shipped recipe).
# A run that was interrupted is resumed; a finished one is skipped.
set -euo pipefail
OUT=$1; shift
DATA=${DATA:-../shared/data/rsna-100px}
overrides=(data.root="$DATA" train.early_stopping=null)
[ -n "${LIMIT:-}" ] && overrides+=(data.limit="$LIMIT")
[ -n "${EPOCHS:-}" ] && overrides+=(train.epochs="$EPOCHS")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && overrides+=($EXTRA)
runs=()
for recipe in "$@"; do
  name=$(basename "$recipe" .yaml)
  run="$OUT/$name"
  runs+=("$run")
  [ -f "$run/val_summary.json" ] && continue
  resume=(); [ -f "$run/checkpoint.pt" ] && resume=(--resume)
  boneage train "$recipe" "${overrides[@]}" --out "$run" --quiet "${resume[@]}"
done
boneage compare "${runs[@]}"
