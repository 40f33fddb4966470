#!/usr/bin/env bash
# Reproduce the shipped bundles models/default (mtl1d: ONNX FP32, ONNX INT8, TFLite INT8) and
# models/default-pruned-int8 (MiniDrop, then INT8), each with its fusion stage, from nothing but the synthetic generator's
# capture sessions, with the baselines, the information bound and the pruning controls beside.
#
#   tools/make_default_bundle.sh [WORK_DIR]     (default /tmp/edge-tc-default; needs '.[train]')
#
# Deterministic under the seeds below (CPU, OMP_NUM_THREADS=1 for the data; training threads as
# torch picks). Stage times are logged to WORK_DIR/timing.log.
# Writes WORK_DIR/*.json: the figures the README quotes (train and test sets are different seeds,
# so their capture sessions are disjoint; test150k's app-balanced subset is >= 20,000 packets,
# natural30k is the natural label mix of Tables 4 and 5).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/edge-tc-default}
TC=${TC:-.venv/bin/edge-tc}
H=${MINIDROP_H:-4}
EPOCHS=${EPOCHS:-10}
FT_EPOCHS=${FT_EPOCHS:-5}
mkdir -p "$WORK"

stage() {  # stage NAME DONE_FILE COMMAND...: run once, log its wall time
    local name=$1 done=$2
    shift 2
    [ -e "$done" ] && return 0
    local t0=$SECONDS
    "$@"
    echo "$name $((SECONDS - t0)) s" >> "$WORK/timing.log"
}

stage data-train "$WORK/train200k/labels.csv" \
    "$TC" synth dataset --out "$WORK/train200k" --packets 200000 --seed 1 --workers 2 --quiet
stage data-test "$WORK/test150k/labels.csv" \
    "$TC" synth dataset --out "$WORK/test150k" --packets 150000 --seed 2 --workers 2 --quiet
stage data-natural "$WORK/natural30k/labels.csv" \
    "$TC" synth dataset --out "$WORK/natural30k" --packets 30000 --seed 3 --workers 2 --quiet
stage data-fusion "$WORK/fusion100k/labels.csv" \
    "$TC" synth dataset --out "$WORK/fusion100k" --packets 100000 --seed 4 --workers 2 --quiet

# Trivial baselines and the information bound (gradient boosting on decoded fields), session
# split vs random split of the training set (docs/train/baselines.md).
stage baselines "$WORK/baselines_train.json" \
    sh -c "$TC train baselines --data '$WORK/train200k' --split-by both --json > '$WORK/baselines_train.json'"

# Paper 1: Adam 1e-3, batch 64, DTP, app-balanced 65/20/10 split drawn by capture session.
stage fit "$WORK/mtl/best.pt" \
    "$TC" train fit --data "$WORK/train200k" --out "$WORK/mtl" --model mtl1d --epochs "$EPOCHS" \
        --patience 4 --seed 0 --no-progress

# Paper 1's ablation: the same run with uniform task weights instead of DTP (DTP vs uniform).
stage fit-uniform "$WORK/mtl_uniform/best.pt" \
    "$TC" train fit --data "$WORK/train200k" --out "$WORK/mtl_uniform" --model mtl1d \
        --epochs "$EPOCHS" --patience 4 --seed 0 --weighting uniform --no-progress

# Paper 1's gate: four single-task models under the same rules, KPIstl vs KPImtl.
for t in phy frame app_type app; do
    stage "stl-$t" "$WORK/stl_$t/best.pt" \
        "$TC" train fit --data "$WORK/train200k" --out "$WORK/stl_$t" --model stl1d --task "$t" \
            --epochs "$EPOCHS" --patience 4 --seed 0 --no-progress
done
stage compare "$WORK/compare.json" \
    "$TC" train compare --stl "$WORK/stl_phy" "$WORK/stl_frame" "$WORK/stl_app_type" \
        "$WORK/stl_app" --mtl "$WORK/mtl" --out "$WORK/compare.json"

# Paper 2: MiniDrop as the authors define it (dry run of h first), the pruned widths trained from
# scratch (the control paper 2 lacks), and a uniform-rate baseline.
stage dry-run "$WORK/prune_dry_run.json" \
    sh -c "$TC train prune --dry-run --h 2 4 8 16 --rate 0.5 0.8 --checkpoint '$WORK/mtl/best.pt' --json > '$WORK/prune_dry_run.json'"
stage minidrop "$WORK/pruned/pruned.pt" \
    "$TC" train prune --method minidrop --h "$H" --checkpoint "$WORK/mtl/best.pt" \
        --data "$WORK/train200k" --out "$WORK/pruned" --epochs "$FT_EPOCHS" --patience 3 --no-progress
stage scratch "$WORK/scratch/pruned.pt" \
    "$TC" train prune --method minidrop --h "$H" --from-scratch --checkpoint "$WORK/mtl/best.pt" \
        --data "$WORK/train200k" --out "$WORK/scratch" --epochs "$FT_EPOCHS" --patience 3 --no-progress
stage uniform "$WORK/uniform/pruned.pt" \
    "$TC" train prune --method uniform --rate 0.8 --checkpoint "$WORK/mtl/best.pt" \
        --data "$WORK/train200k" --out "$WORK/uniform" --epochs "$FT_EPOCHS" --patience 3 --no-progress

# The pruned model's INT8 app head agrees with PyTorch on 0.961 (ONNX) / 0.963 (TFLite) of 512
# held-out packets with 1,024 calibration packets (0.945 ONNX with 256): below the 0.97 bar, which
# its manifest records as lowered to 0.93 (evaluation.agreement_required); README says so.
export_bundles() {
    rm -rf models/default models/default-pruned-int8
    "$TC" train export --checkpoint "$WORK/mtl/best.pt" --data "$WORK/train200k" \
        --heldout-data "$WORK/test150k" --out models/default \
        --formats onnx-fp32 onnx-int8 tflite-int8
    "$TC" train export --checkpoint "$WORK/pruned/pruned.pt" --data "$WORK/train200k" \
        --heldout-data "$WORK/test150k" --out models/default-pruned-int8 \
        --formats onnx-fp32 onnx-int8 tflite-int8 --calib 1024 --int8-agreement 0.93
    touch "$WORK/exported"
}
stage export "$WORK/exported" export_bundles

# The fusion stage of each bundle (docs/train/fusion.md): trees over its FP32 CNN's outputs, the
# packet's duration and its decoded PHY header, fitted on fusion100k (sessions neither the CNN
# nor the test sets have seen).
for b in default default-pruned-int8; do
    stage "fusion-$b" "$WORK/fused-$b" \
        sh -c "$TC train fusion --bundle models/$b --data '$WORK/fusion100k' && touch '$WORK/fused-$b'"
done

# Every model file through its engine on fresh test sets (their sessions are not the training
# set's): test150k's class-balanced (app) subset, and every packet of natural30k (natural mix).
for b in default default-pruned-int8; do
    stage "eval-$b-balanced" "$WORK/eval_bundle_$b.json" \
        sh -c "$TC train evaluate --bundle models/$b --data '$WORK/test150k' --split balanced --json > '$WORK/eval_bundle_$b.json'"
    stage "eval-$b-natural" "$WORK/eval_bundle_${b}_natural.json" \
        sh -c "$TC train evaluate --bundle models/$b --data '$WORK/natural30k' --split all --json > '$WORK/eval_bundle_${b}_natural.json'"
done
# What classifying flows could add (issue 12): the bound with each data frame's station over its
# last 32 data frames and the last second (README, "The shipped bundles"), beside the per-packet
# bounds.
stage eval-default-flow32 "$WORK/eval_bundle_default_flow32.json" \
    sh -c "$TC train evaluate --bundle models/default --data '$WORK/test150k' --split balanced --flow-window 32 --json > '$WORK/eval_bundle_default_flow32.json'"
for run in mtl mtl_uniform pruned scratch uniform; do
    ckpt="$WORK/$run/best.pt"
    case "$run" in mtl|mtl_uniform) ;; *) ckpt="$WORK/$run/pruned.pt" ;; esac
    stage "eval-$run" "$WORK/eval_$run.json" \
        sh -c "$TC train evaluate --checkpoint '$ckpt' --data '$WORK/test150k' --split balanced --no-bound --json > '$WORK/eval_$run.json'"
done
echo "bundles: models/default models/default-pruned-int8; figures: $WORK/*.json; times: $WORK/timing.log"
