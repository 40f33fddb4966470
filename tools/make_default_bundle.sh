#!/usr/bin/env bash
# Reproduce the shipped bundles models/default (mtl1d: ONNX FP32, ONNX INT8, TFLite INT8) and
# models/default-pruned-int8 (MiniDrop h=4, then INT8) from nothing but the synthetic generator.
#
#   tools/make_default_bundle.sh [WORK_DIR]     (default /tmp/edge-tc-default; needs '.[train]')
#
# Deterministic under the seeds below (CPU, OMP_NUM_THREADS=1). About 25 minutes on 2 cores:
# datasets ~4 min, fit 7 epochs ~10 min, MiniDrop fine-tune ~6 min, exports and evaluation ~3 min.
# Writes WORK_DIR/eval_*.json: per-task accuracy on every packet of a fresh test set's
# app-balanced subset (seed 2), the figures the README quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/edge-tc-default}
TC=${TC:-.venv/bin/edge-tc}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"

[ -f "$WORK/train200k/labels.csv" ] ||
    $TC synth dataset --out "$WORK/train200k" --packets 200000 --seed 1 --workers 2 --quiet
[ -f "$WORK/test50k/labels.csv" ] ||
    $TC synth dataset --out "$WORK/test50k" --packets 50000 --seed 2 --workers 2 --quiet

# Paper 1: Adam 1e-3, batch 64, DTP, balanced 65/20/10 split; epoch 7 is where validation
# accuracy stops improving on this data (a 25-epoch run with patience 6 keeps epoch 7).
[ -f "$WORK/mtl/best.pt" ] ||
    $TC train fit --data "$WORK/train200k" --out "$WORK/mtl" --model mtl1d --epochs 7 \
        --patience 6 --seed 0 --no-progress
# Paper 2: MiniDrop (authors' rate rule), step h=4, then fine-tune; sizes per h: train prune --dry-run.
[ -f "$WORK/pruned/pruned.pt" ] ||
    $TC train prune --method minidrop --h 4 --checkpoint "$WORK/mtl/best.pt" \
        --data "$WORK/train200k" --out "$WORK/pruned" --epochs 8 --patience 3 --no-progress

rm -rf models/default models/default-pruned-int8
# INT8 app agreement of the unpruned model is 0.94-0.96 (app is near chance on synthetic data, its
# top-1 flips on near-ties); accuracy is unchanged (README), so that bundle records a 0.92 bar.
$TC train export --checkpoint "$WORK/mtl/best.pt" --data "$WORK/train200k" \
    --heldout-data "$WORK/test50k" --out models/default --formats onnx-fp32 onnx-int8 tflite-int8 \
    --int8-agreement 0.92
$TC train export --checkpoint "$WORK/pruned/pruned.pt" --data "$WORK/train200k" \
    --heldout-data "$WORK/test50k" --out models/default-pruned-int8 \
    --formats onnx-fp32 onnx-int8 tflite-int8

$TC train evaluate --checkpoint "$WORK/mtl/best.pt" --data "$WORK/test50k" --split balanced \
    --json > "$WORK/eval_default.json"
$TC train evaluate --checkpoint "$WORK/pruned/pruned.pt" --data "$WORK/test50k" \
    --split balanced --json > "$WORK/eval_pruned.json"
for b in default default-pruned-int8; do
    $TC train evaluate --bundle "models/$b" --data "$WORK/test50k" --split balanced --json \
        > "$WORK/eval_bundle_$b.json"
done
echo "bundles: models/default models/default-pruned-int8; evaluation: $WORK/eval_*.json"
