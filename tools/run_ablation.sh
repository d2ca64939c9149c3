#!/bin/bash
# Augmentation ablation of issue 10 (results: docs/guide/train.rst). Each run: flmcore train, then
# flmcore evaluate on the validation split with landmark boxes.
set -e
OUT=${OUT:-runs/ablation}
for v in full noflip norot_noocc legacy; do
  flmcore train configs/ablation/$v.toml --out $OUT/$v --no-progress ${RESUME:+--resume}
  flmcore evaluate $OUT/$v/best.pt ../shared/data/300w_train_crops --split val --out $OUT/$v/eval --no-progress
done
