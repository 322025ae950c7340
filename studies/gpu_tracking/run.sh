#!/usr/bin/env bash
# Track finding at scale on one GPU machine, in one run of about 8 minutes (hard budget
# BUDGET_S=470 s): the GPU parts of issues 5 (full-label figures) and 4 (pretraining on
# denser events). Jobs share the GPU and the 16 cores:
#   A. full labels at 1,000 particles: studies/track_building/run.py on
#      studies/gpu_tracking/configs/trackml_1k_finetune.yaml (interaction head), LABELS_A labelled
#      events, STEPS_A steps, walkthrough at several cuts, validation-tuned row, ceiling;
#   B. full labels at pileup-200 scale (10,000 particles): the same benchmark on
#      configs/finetune/trackml_gpu.yaml (bf16), LABELS_B events, STEPS_B steps;
#   C. 10 labels at 1,000 particles, pretrained vs scratch, 3 seeds each
#      (studies/label_efficiency/run.py; C1 scratch, C2 pretrain + finetune, in parallel);
#   D. python -m benchmarks.edge_head at 10,000 particles: one step with each edge head, time and GPU
#      memory (first, alongside the CPU-bound event preparation).
# Events are simulated and graphed once, in parallel (EventDataModule(prepare_workers=...)).
# Training stops at --max-minutes where the step budget does not fit (the rows say how many
# steps ran). Every job runs under `timeout`; one that fails does not stop the others.
#
# Every Python step runs from the repository root as `python -m <package>.<module>`.
#
#   OUT=dir bash studies/gpu_tracking/run.sh
#   GPU_TRACKING_SMOKE=1 PYTHON=.venv/bin/python OUT=/tmp/o bash studies/gpu_tracking/run.sh  # CPU dry run
#
# Files in $OUT (8 at most): a_full_labels_1k.json, b_full_labels_10k.json,
# c_scratch_10labels_1k.json, c_pretrained_10labels_1k.json, d_edge_head_10k.json,
# summary.json, run.log (this script's own log), logs.tgz (every job's stdout + stderr).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
OUT="${OUT:-./gpu_out}"
PY="${PYTHON:-python3}"
SMOKE="${GPU_TRACKING_SMOKE:-0}"
BUDGET="${BUDGET_S:-470}"
WORK="${WORK:-runs/gpu_tracking}"
mkdir -p "$OUT" "$WORK/logs"
LOG="$OUT/run.log"
: >"$LOG"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { echo "[gpu_tracking t=$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# job NAME RESERVE_S CMD...: in the background, under a timeout that ends RESERVE_S before
# the budget; stdout + stderr in $WORK/logs/NAME.log
job() {
  local name=$1 reserve=$2 limit
  shift 2
  limit=$(( $(left) - reserve ))
  if (( limit < 20 )); then say "skip $name: budget spent"; return 0; fi
  say "start $name (limit ${limit}s): $*"
  ( timeout -k 5 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1; rc=$?
    say "end $name rc=$rc$( (( rc == 124 || rc == 137 )) && echo ' (TIMED OUT)')" ) &
}
# minutes of training that still leave RESERVE_S seconds (evaluation, summary) in the budget
train_minutes() { "$PY" -c "print(round(max(0.2, ($(left) - $1) / 60), 2))"; }

if [[ "$SMOKE" == "1" ]]; then
  P1K=40; P10K=60; LABELS_A=4; STEPS_A=3; LABELS_B=2; STEPS_B=2; PRE_STEPS=3; FT_STEPS=3
  SEEDS=0,1; WORKERS=2; PRECISION_B=32-true; EXTRA_D=(--steps 1 --warmup 0); DEV=cpu
else
  if [[ -z "${NO_INSTALL:-}" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 \
      || say "pip install -e . failed (PYTHONPATH has the repo anyway)"
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv >>"$LOG" 2>&1
  P1K=1000; P10K=10000; LABELS_A=${LABELS_A:-200}; STEPS_A=${STEPS_A:-3000}
  LABELS_B=${LABELS_B:-40}; STEPS_B=${STEPS_B:-600}; PRE_STEPS=${PRE_STEPS:-600}
  FT_STEPS=${FT_STEPS:-400}; SEEDS=0,1,2; WORKERS=15; PRECISION_B=bf16-mixed
  EXTRA_D=(--steps 3 --warmup 1); DEV=cuda
fi
"$PY" -c "import torch, torch_geometric, lightning; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() \
else '-', 'pyg', torch_geometric.__version__, 'lightning', lightning.__version__)" >>"$LOG" 2>&1

# ---------------------------------------------------------------- configs for this run
# $WORK/{a_1k_finetune,c_1k_pretrain,b_10k_finetune}.yaml: the shipped configs with this
# run's particle counts and a cache under $WORK
"$PY" - "$WORK" "$P1K" "$P10K" "$LABELS_B" <<'PYEOF' >>"$LOG" 2>&1
import sys
from pathlib import Path

import yaml

work, p1k, p10k, labels_b = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for src, dst, particles, data in (
        ("studies/gpu_tracking/configs/trackml_1k_finetune.yaml", "a_1k_finetune.yaml", p1k, {}),
        ("studies/gpu_tracking/configs/trackml_1k_pretrain.yaml", "c_1k_pretrain.yaml", p1k, {}),
        ("configs/finetune/trackml_gpu.yaml", "b_10k_finetune.yaml", p10k,
         {"num_train": labels_b, "num_val": 2, "num_test": 4})):
    cfg = yaml.safe_load(Path(src).read_text())
    cfg["data"]["simulator"]["num_particles"] = particles
    cfg["data"].update(data, cache_dir=str(work / "cache"))
    (work / dst).write_text(yaml.safe_dump(cfg, sort_keys=False))
    print("config", work / dst, cfg["data"])
PYEOF

# prepare NAME WORKERS CONFIG NUM_TRAIN: simulate + graph + cache every event of a config
prepare() {
  say "prepare $1 ($2 workers)"
  timeout -k 5 $(( $(left) - 60 )) "$PY" - "$3" "$4" "$2" <<'PYEOF' >>"$WORK/logs/prepare_$1.log" 2>&1
import sys, time
from pathlib import Path

import yaml

from gnn_jepa.datamodule import EventDataModule

cfg, num_train, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = {**yaml.safe_load(Path(cfg).read_text())["data"], "num_train": num_train,
        "prepare_workers": workers}
t = time.time()
EventDataModule(**data).prepare_data()
print(f"{cfg}: {num_train} train events + val + test cached in {time.time() - t:.1f} s")
PYEOF
  say "prepared $1 rc=$?"
}

# ---------------------------------------------------------------- D: both heads at 10k particles
# first, while the 1k events are prepared on the CPU: it simulates its own event and takes the
# GPU for ~20 s (up to ~48 GiB), before job B needs the memory
OMP_NUM_THREADS=4 job d_edge_head_10k 15 "$PY" -m benchmarks.edge_head \
  --config "$WORK/b_10k_finetune.yaml" --particles "$P10K" --device "$DEV" "${EXTRA_D[@]}" \
  --out "$OUT/d_edge_head_10k.json"

# ---------------------------------------------------------------- 1k-particle jobs
prepare 1k_finetune "$WORKERS" "$WORK/a_1k_finetune.yaml" "$LABELS_A"
prepare 1k_pretrain "$WORKERS" "$WORK/c_1k_pretrain.yaml" 100
export OMP_NUM_THREADS=2
job a_full_labels_1k 15 "$PY" -m studies.track_building.run --config "$WORK/a_1k_finetune.yaml" \
  --labels "$LABELS_A" --steps "$STEPS_A" --edge-labels segment --builders walkthrough \
  --thresholds 0.05,0.1,0.2,0.3,0.5 --max-minutes "$(train_minutes 75)" \
  --json "$OUT/a_full_labels_1k.json"
LE=(-m studies.label_efficiency.run --pretrain-config "$WORK/c_1k_pretrain.yaml"
    --finetune-config "$WORK/a_1k_finetune.yaml" --labels 10 --seeds "$SEEDS"
    --finetune-steps "$FT_STEPS")
job c_scratch 15 "$PY" "${LE[@]}" --arms scratch --out "$WORK/le" \
  --json "$OUT/c_scratch_10labels_1k.json"
job c_pretrained 15 "$PY" "${LE[@]}" --arms finetune --pretrain-steps "$PRE_STEPS" \
  --out "$WORK/le" --json "$OUT/c_pretrained_10labels_1k.json"

# ---------------------------------------------------------------- pileup-200-scale job
OMP_NUM_THREADS=1 prepare 10k_finetune 10 "$WORK/b_10k_finetune.yaml" "$LABELS_B"
job b_full_labels_10k 15 "$PY" -m studies.track_building.run --config "$WORK/b_10k_finetune.yaml" \
  --labels "$LABELS_B" --steps "$STEPS_B" --precision "$PRECISION_B" --edge-labels segment \
  --builders walkthrough --thresholds 0.1,0.3,0.5 --max-minutes "$(train_minutes 90)" \
  --json "$OUT/b_full_labels_10k.json"
wait


# ---------------------------------------------------------------- summary
say "summary"
tar -czf "$OUT/logs.tgz" -C "$WORK" logs >/dev/null 2>&1
timeout 30 "$PY" - "$OUT" "$WORK/logs" "$(( $(date +%s) - T0 ))" <<'PYEOF' | tee "$OUT/summary.json"
import json, sys
from pathlib import Path

out, logs = Path(sys.argv[1]), Path(sys.argv[2])
keys = ("trackml_score", "dm_efficiency", "fake_rate", "duplicate_rate", "steps_done",
        "train_seconds")


def rows_of(name, log):
    """The finished JSON's rows, else every JSON row the job printed before it stopped."""
    try:
        return json.loads((out / name).read_text()), True
    except Exception:
        rows = []
        for line in (logs / log).read_text().splitlines() if (logs / log).exists() else []:
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        return {"rows": rows}, False


summary = {"elapsed_s": int(sys.argv[3])}
for tag, name, log in (("a_full_labels_1k", "a_full_labels_1k.json", "a_full_labels_1k.log"),
                       ("b_full_labels_10k", "b_full_labels_10k.json", "b_full_labels_10k.log")):
    res, done = rows_of(name, log)
    summary[tag] = {"finished": done, "device": res.get("device"), "rows": [
        {k: r[k] for k in ("edge_label", "threshold", "validation_tuned", *keys) if k in r}
        for r in res.get("rows", []) if r.get("validation_tuned") or r.get("edge_label", "").startswith("truth")
        or "steps_done" in r and "trackml_score" not in r]}
for tag, name, log in (("c_scratch", "c_scratch_10labels_1k.json", "c_scratch.log"),
                       ("c_pretrained", "c_pretrained_10labels_1k.json", "c_pretrained.log")):
    res, done = rows_of(name, log)
    summary[tag] = {"finished": done, "summary": res.get("summary"), "runs": [
        {k: r.get(k) for k in ("arm", "seed", "trackml_score", "edge_auc", "dm_efficiency", "fake_rate")}
        for r in res.get("rows", []) if "arm" in r]}
try:
    summary["d_edge_head_10k"] = json.loads((out / "d_edge_head_10k.json").read_text())
except Exception as exc:
    summary["d_edge_head_10k"] = f"missing ({type(exc).__name__})"
print(json.dumps(summary, indent=1))
PYEOF
say "done"
