#!/usr/bin/env bash
# Issue 25's 1,000-particle full-label row on a CPU, one thread, resumable across sessions:
# configs/finetune/trackml_1k.yaml (200 labelled events, segment-pair head, shipped graph + edge
# filter, validation every 200 steps on 4 events, early stopping after 5 without a better
# TrackML score) from scratch. A SIGTERM saves last.ckpt; calling the script again resumes it
# in the same logger version. TEST=<checkpoint> instead tests that checkpoint on the config's
# 20 held-out events (metrics.json in $WORK/test_<name>).
#
#   WORK=runs/full_labels_1k_cpu bash studies/full_labels_1k_cpu/run.sh
#   TEST=runs/full_labels_1k_cpu/finetune_trackml_1k/version_0/checkpoints/epoch=0-step=200.ckpt \
#     WORK=runs/full_labels_1k_cpu bash studies/full_labels_1k_cpu/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY="${PYTHON:-python3}"
WORK="${WORK:-runs/full_labels_1k_cpu}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" WANDB_MODE=disabled
COMMON=(--config configs/finetune/trackml_1k.yaml --model.mode scratch --data.num_workers 0
        --data.prepare_workers 1 --trainer.enable_progress_bar false)
mkdir -p "$WORK"
if [[ -n "${TEST:-}" ]]; then
  name=$(basename "$TEST" .ckpt)
  exec "$PY" -m gnn_jepa.cli test "${COMMON[@]}" --trainer.logger.init_args.save_dir "$WORK/test_logs" \
    --ckpt_path "$TEST" --model.output_dir "$WORK/test_$name"
fi
LAST="$WORK/finetune_trackml_1k/version_0/checkpoints/last.ckpt"
RESUME=()
[[ -f "$LAST" ]] && RESUME=(--ckpt_path "$LAST" --trainer.logger.init_args.version 0)
"$PY" -m gnn_jepa.cli fit "${COMMON[@]}" --trainer.logger.init_args.save_dir "$WORK" "${RESUME[@]}" \
  >>"$WORK/fit.log" 2>&1
