#!/usr/bin/env bash
# Issue 25's 1,000-particle full-label row on one GPU machine, in about 8 minutes: the shipped
# configs/finetune/trackml_1k.yaml (segment-pair head, shipped graph + edge filter, 200
# labelled events, early stopping on the validation TrackML score) from scratch, for at most
# FIT_TIME of training; its best checkpoint tested on the config's 20 held-out events (TrackML
# score, DM efficiency, fake rate, the graph's ceiling on the same events); then one training
# step of the MLP and segment-pair heads at 1,000 particles (this config), and of the interaction
# and segment-pair heads at 10,000 particles (configs/finetune/trackml_gpu.yaml, its graph):
# python -m benchmarks.edge_head, time and GPU memory, to decide whether the 10k config can
# take the segment-pair head.
#
#   OUT=dir bash studies/gpu_tracking/full_labels_1k.sh
#   GPU_TRACKING_SMOKE=1 PYTHON=.venv/bin/python OUT=/tmp/o bash studies/gpu_tracking/full_labels_1k.sh  # CPU dry run
#
# Files in $OUT: full_labels_1k_metrics.json (the test's metrics.json), full_labels_1k_train.csv
# (the run's metrics.csv: validation scores per step), edge_head_gpu_1k.json,
# edge_head_gpu_10k.json, run.log, logs.txt.
# The headline row: benchmarks/results/headline.json tracking["1k_full"], from the first file.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
OUT="${OUT:-./gpu_out}"
PY="${PYTHON:-python3}"
SMOKE="${GPU_TRACKING_SMOKE:-0}"
WORK="${WORK:-runs/gpu_full_labels_1k}"
CFG=configs/finetune/trackml_1k.yaml
mkdir -p "$OUT" "$WORK"
LOG="$OUT/run.log"
: >"$LOG"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[full_labels_1k t=$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }

if [[ "$SMOKE" == "1" ]]; then
  DATA=(--data.simulator '{"preset": "trackml", "num_particles": 40}' --data.num_train 2
        --data.num_val 2 --data.num_test 2 --data.graph '{"kind": "eta_phi", "radius": 0.3}'
        --data.num_workers 0 --data.prepare_workers 0 --trainer.accelerator cpu
        --trainer.max_steps 4 --trainer.val_check_interval 2)
  FIT_TIME=00:00:02:00; FIT_LIMIT=300; TEST_LIMIT=120; BENCH_LIMIT=120
  BENCH=(--device cpu --steps 1 --warmup 0); P1K=40; P10K=60
else
  DATA=(--data.prepare_workers 16 --data.num_workers 4)
  FIT_TIME=00:00:05:00; FIT_LIMIT=370; TEST_LIMIT=90; BENCH_LIMIT=60
  BENCH=(--device cuda --steps 5 --warmup 2); P1K=1000; P10K=10000
fi
COMMON=(--config "$CFG" --model.mode scratch --trainer.enable_progress_bar false
        --trainer.logger.init_args.save_dir "$WORK" --data.cache_dir "$WORK/cache" "${DATA[@]}")

say "fit: $CFG, at most $FIT_TIME of training"
timeout -k 5 "$FIT_LIMIT" "$PY" -m gnn_jepa.cli fit "${COMMON[@]}" --trainer.max_time "$FIT_TIME" \
  >"$WORK/fit.log" 2>&1
say "fit rc=$?"
RUN=$(ls -dt "$WORK"/finetune_trackml_1k/version_* 2>/dev/null | head -1)
CKPT=$(ls "$RUN"/checkpoints/*.ckpt 2>/dev/null | grep -v '/last.ckpt$' | head -1)
[[ -n "$RUN" ]] && cp "$RUN/metrics.csv" "$OUT/full_labels_1k_train.csv"
if [[ -n "$CKPT" ]]; then
  say "test: $CKPT"
  timeout -k 5 "$TEST_LIMIT" "$PY" -m gnn_jepa.cli test "${COMMON[@]}" --ckpt_path "$CKPT" \
    --model.output_dir "$WORK/test" >"$WORK/test.log" 2>&1
  say "test rc=$?"
  cp "$WORK/test/metrics.json" "$OUT/full_labels_1k_metrics.json" 2>/dev/null
else
  say "no best checkpoint (did a validation run?): no test"
fi
say "edge heads at $P1K particles: ${BENCH[*]}"
timeout -k 5 "$BENCH_LIMIT" "$PY" -m benchmarks.edge_head --config "$CFG" --heads mlp,segment_pairs \
  --particles "$P1K" "${BENCH[@]}" --out "$OUT/edge_head_gpu_1k.json" >"$WORK/edge_head.log" 2>&1
say "edge heads 1k rc=$?"
timeout -k 5 "$BENCH_LIMIT" "$PY" -m benchmarks.edge_head --config configs/finetune/trackml_gpu.yaml \
  --heads interaction,segment_pairs --particles "$P10K" "${BENCH[@]}" \
  --out "$OUT/edge_head_gpu_10k.json" >>"$WORK/edge_head.log" 2>&1
say "edge heads 10k rc=$?"
tail -n 40 "$WORK/fit.log" "$WORK/test.log" "$WORK/edge_head.log" >"$OUT/logs.txt" 2>/dev/null
say "done"
