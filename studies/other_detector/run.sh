#!/usr/bin/env bash
# Track finding on another detector's TrackML-format events, as a new user would run it.
#
#   bash studies/other_detector/run.sh [LABELS] [SEED]      (defaults: 10 labelled events, seed 0)
#
# 1. `gnn-jepa simulate` writes 46 events of 150 particles; studies/other_detector/renumber.py
#    then gives them another detector's numbering (10 barrel layers as volume 1, layers 1..10;
#    the disks as volumes 2 and 3) and sets the truth `weight` column to 0 (the reader then
#    computes the weights from truth, and says so).
# 2. `gnn-jepa fit-graph` fits the learned graph on events 0-7, reports it on events 8-11 and
#    writes graph.yaml.
# 3. `gnn-jepa fit` (configs/finetune/trackml_small.yaml: segment-pair head, early stopping)
#    trains from scratch on LABELS events from 12 on, validates on the next 4, and
#    `gnn-jepa test` scores the best checkpoint on the last 20 events (26-45), with the
#    graph's ceiling on the same events.
# Writes $OUT/fit_graph.json, $OUT/test/metrics.json, and prints the figures. Run from anywhere;
# OUT (default runs/other_detector), THREADS (default 2), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LABELS=${1:-10}; SEED=${2:-0}
OUT="${OUT:-runs/other_detector}"
PY="${PYTHON:-.venv/bin/python}"
export WANDB_MODE=disabled OMP_NUM_THREADS="${THREADS:-2}"
mkdir -p "$OUT"
start=$(date +%s)
if [ ! -f "$OUT/events/.done" ]; then
    rm -rf "$OUT/events"
    "$PY" -m gnn_jepa.cli simulate --num-events 46 --num-particles 150 --seed 7 --out "$OUT/events"
    "$PY" -m studies.other_detector.renumber "$OUT/events"
    touch "$OUT/events/.done"
fi
"$PY" -m gnn_jepa.cli fit-graph "$OUT/events" --out "$OUT/graph" --fit-events 8 --eval-events 4 \
    --compare '{"kind": "learned", "embedding": "trackml", "pair_filter": "trackml_all_pt", "radius": 0.16}' \
    | tee "$OUT/fit_graph.log"
graph=$("$PY" -c "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))['graph']))" "$OUT/graph/graph.yaml")
RUN="$OUT/L${LABELS}_s${SEED}"
common=(--config configs/finetune/trackml_small.yaml --model.mode scratch
        --data.source trackml --data.data_dir "$OUT/events" --data.train_offset 12
        --data.num_train "$LABELS" --data.num_val 4 --data.num_test 20
        --data.cache_dir "$RUN/cache" --data.graph "$graph" --seed_everything "$SEED"
        --trainer.enable_progress_bar false --trainer.logger.init_args.save_dir "$RUN")
"$PY" -m gnn_jepa.cli fit "${common[@]}" > "$RUN.fit.log" 2>&1
ckpt=$(ls "$RUN"/*/version_*/checkpoints/*.ckpt | grep -v last.ckpt | tail -1)
"$PY" -m gnn_jepa.cli test "${common[@]}" --ckpt_path "$ckpt" --model.output_dir "$RUN/test" > "$RUN.test.log" 2>&1
echo "other_detector labels=$LABELS seed=$SEED wall=$(( $(date +%s) - start ))s best=$(basename "$ckpt")"
"$PY" -c "import json, sys; m = json.load(open(sys.argv[1]))['metrics']; print({k: m[k] for k in ('trackml_score', 'dm_efficiency', 'fake_rate', 'ceiling_trackml_score', 'edge_auc', 'threshold', 'num_events')})" "$RUN/test/metrics.json"
"$PY" -m studies.other_detector.summarize --runs "$OUT" > /dev/null
