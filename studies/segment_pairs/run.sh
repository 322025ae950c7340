#!/usr/bin/env bash
# Segment-pair head vs interaction head: scratch track finding on the small config.
#
#   bash studies/segment_pairs/run.sh NAME STEPS LABELS SEED [extra gnn-jepa model args...]
#   bash studies/segment_pairs/run.sh pairs_s0 300 10 0 --model.head.kind segment_pairs --model.head.rounds 4
#   bash studies/segment_pairs/run.sh inter_s0 300 10 0 --model.head.kind interaction --model.head.rounds 3
#
# Fits configs/finetune/trackml_small.yaml in scratch mode on LABELS labelled events for STEPS
# steps (cut tuned on the validation events), then tests the last checkpoint on 20 held-out
# events; writes $OUT/NAME/test/metrics.json and prints the headline metrics. Run from anywhere;
# OUT (default runs/segment_pairs), THREADS (default 2) and PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
NAME=$1; STEPS=$2; LABELS=$3; SEED=$4; shift 4
OUT="${OUT:-runs/segment_pairs}/$NAME"
PY="${PYTHON:-.venv/bin/python}"
export WANDB_MODE=disabled OMP_NUM_THREADS="${THREADS:-2}"
mkdir -p "$OUT"
common=(--config configs/finetune/trackml_small.yaml --model.mode scratch --data.num_train "$LABELS"
        --data.num_test 20 --seed_everything "$SEED" --trainer.enable_progress_bar false
        --trainer.logger.init_args.save_dir "$OUT" "$@")
start=$(date +%s)
"$PY" -m gnn_jepa.cli fit "${common[@]}" --trainer.max_steps "$STEPS" > "$OUT/fit.log" 2>&1
ckpt=$(ls -t "$OUT"/*/version_*/checkpoints/last.ckpt | head -1)
"$PY" -m gnn_jepa.cli test "${common[@]}" --ckpt_path "$ckpt" --model.output_dir "$OUT/test" > "$OUT/test.log" 2>&1
echo "$NAME steps=$STEPS labels=$LABELS seed=$SEED wall=$(( $(date +%s) - start ))s"
"$PY" -c "import json, sys; m = json.load(open(sys.argv[1]))['metrics']; print({k: m[k] for k in ('trackml_score', 'dm_efficiency', 'fake_rate', 'edge_auc', 'threshold', 'num_events')})" "$OUT/test/metrics.json"
