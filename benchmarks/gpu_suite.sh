#!/usr/bin/env bash
# The whole GPU benchmark set in one run (H100, 16 CPU cores: about 6-8 minutes, hard
# budget SUITE_BUDGET_S=520 s, plus at most 30 s of summary, so it ends under the device
# tool's 10 minutes a command; give the call timeout_s=600).
#
#   bash benchmarks/gpu_suite.sh                 # from anywhere; OUT defaults to ./gpu_out
#   OUT=/some/dir bash benchmarks/gpu_suite.sh
#   GPU_SUITE_SMOKE=1 PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh   # tiny CPU dry run
#
# Steps (each under `timeout`, each clamped to the budget left; a step that fails or
# times out does not stop the others, and every benchmark but radius_graph rewrites its
# JSON after each row, so a cut-short step still leaves its finished rows):
#   0. install: wheels in .whl/ (if any) into /tmp/site, then `pip install --no-deps -e .`
#      (no network there: --no-index, --no-build-isolation); PYTHONPATH gets the repo too;
#   (each benchmark runs from the repository root as `python -m benchmarks.<name>`)
#   1. inference.py   10k/50k/100k hits, fp32, bf16, bf16+compile, on two graphs: the
#                     configs' (~40 edges per hit) and k6 (~7, the DESIGN's reference degree);
#   2. train_step.py  the same sizes, modes and graphs (compile time apart);
#   3. edge_head.py   the shipped track-finding model (configs/finetune/trackml_1k.yaml:
#                     learned graph + filters, segment-pair head) at 1,000 and 10,000
#                     particles (~9k and ~94k hits): full-event inference (encoder, edge
#                     scores, tracks) and one fine-tuning step, fp32, with their scaling;
#   4. dataloader.py  50k hits, configs' graph: pre-loaded vs cached vs on-the-fly,
#                     num_workers 0/4/8;
#   5. radius_graph.py (existing; its CUDA part runs when a GPU is present), 100k hits;
#   6. summary: one compact JSON (also $OUT/summary.json) on stdout.
# Files in $OUT (8, the device tool's limit): inference.json, train_step.json,
# track_finding_inference.json, track_finding_train.json, dataloader.json,
# radius_graph_large.json, summary.json and suite.log (all stderr and each step's status).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT="${OUT:-./gpu_out}"
PY="${PYTHON:-python3}"
SMOKE="${GPU_SUITE_SMOKE:-0}"
BUDGET="${SUITE_BUDGET_S:-520}"
mkdir -p "$OUT"
LOG="$OUT/suite.log"
: >"$LOG"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled

say() { echo "[suite t=$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }

# run_step NAME LIMIT_S STDOUT_FILE CMD...   (STDOUT_FILE "-" = the log)
run_step() {
  local name=$1 limit=$2 dest=$3 rc
  shift 3
  local left=$(( BUDGET - ($(date +%s) - T0) ))
  if (( left < 15 )); then say "skip $name: suite budget spent"; return 0; fi
  (( limit > left )) && limit=$left
  say "start $name (limit ${limit}s): $*"
  if [[ "$dest" == "-" ]]; then
    timeout -k 5 "$limit" "$@" >>"$LOG" 2>&1
  else
    timeout -k 5 "$limit" "$@" >"$dest" 2>>"$LOG"
  fi
  rc=$?
  say "end $name rc=$rc$( (( rc == 124 || rc == 137 )) && echo ' (TIMED OUT)')"
  return 0
}

# ---------------------------------------------------------------- 0. install
if [[ "$SMOKE" != "1" ]]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    run_step wheels 90 - "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  run_step install 90 - "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv >>"$LOG" 2>&1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # works even if the editable install did not
run_step versions 60 - "$PY" -c "import torch, torch_geometric, lightning, gnn_jepa; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '-', \
'pyg', torch_geometric.__version__, 'lightning', lightning.__version__, 'gnn_jepa', gnn_jepa.__file__)"

if [[ "$SMOKE" == "1" ]]; then
  DEV=cpu; SIZES=300,600; MODES=fp32,bf16; SMALL=(--d-model 16 --n-layers 1 --heads 2 --threads 1)
  TS_ARGS=(--warmup 1 --steps 2 --fit-from 300 --d-embedding 8); INF_ARGS=(--warmup 1 --repeat 2)
  GRAPHS=0,6
  DL_ARGS=(--hits 300 --workers 0,1 --events 2 --warmup 1 --steps 2 --d-model 16 --n-layers 1 --threads 1)
  RG_LARGE=40; TF_ARGS=(--particles 20,40 --warmup 0 --steps 1)
else
  DEV=cuda; SIZES=10000,50000,100000; MODES=fp32,bf16,bf16+compile; SMALL=(); GRAPHS=0,6
  TS_ARGS=(--warmup 3 --steps 10); INF_ARGS=(--warmup 3 --repeat 20)
  DL_ARGS=(--hits 50000 --workers 0,4,8 --events 3 --warmup 2 --steps 6); RG_LARGE=10000
  TF_ARGS=(--particles 1000,10000 --warmup 1 --steps 3)
fi
TF=(--config configs/finetune/trackml_1k.yaml --heads segment_pairs --device "$DEV" "${TF_ARGS[@]}")

# ---------------------------------------------------------------- 1-5. benchmarks
run_step inference 110 - "$PY" -m benchmarks.inference --device "$DEV" --hits "$SIZES" \
  --max-neighbors "$GRAPHS" --modes "$MODES" "${INF_ARGS[@]}" ${SMALL[@]+"${SMALL[@]}"} --out "$OUT/inference.json"
run_step train_step 150 - "$PY" -m benchmarks.train_step --device "$DEV" --hits "$SIZES" \
  --max-neighbors "$GRAPHS" --modes "$MODES" "${TS_ARGS[@]}" ${SMALL[@]+"${SMALL[@]}"} --out "$OUT/train_step.json"
run_step track_finding_inference 50 - "$PY" -m benchmarks.edge_head "${TF[@]}" --mode inference \
  --out "$OUT/track_finding_inference.json"
run_step track_finding_train 60 - "$PY" -m benchmarks.edge_head "${TF[@]}" --mode train \
  --out "$OUT/track_finding_train.json"
run_step dataloader 50 - "$PY" -m benchmarks.dataloader --device "$DEV" "${DL_ARGS[@]}" \
  --out "$OUT/dataloader.json"
run_step radius_graph_large 90 "$OUT/radius_graph_large.json" "$PY" -m benchmarks.radius_graph \
  --sizes "$RG_LARGE" --repeat 3

# ---------------------------------------------------------------- 6. summary
say "summary"
timeout 30 "$PY" - "$OUT" "$(( $(date +%s) - T0 ))" <<'PYEOF' | tee "$OUT/summary.json"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])


def load(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except Exception as exc:  # missing (step skipped / crashed before its first row)
        return {"missing": f"{type(exc).__name__}: {exc}"}


summary = {"suite_elapsed_s": int(sys.argv[2]) if len(sys.argv) > 2 else None}
inf = load("inference")
summary["env"] = inf.get("env")
summary["inference"] = [
    {k: r.get(k) for k in ("mode", "graph", "hits", "edges", "error")} | {
        "total_ms": (r.get("total") or {}).get("ms_median"), "stages_ms": r.get("stages_ms_median"),
        "peak_mib": r.get("peak_mib"), "compile_s": r.get("compile_s_est"),
        "host_syncs": r.get("host_syncs"), "within_targets": r.get("within_targets")}
    for r in inf.get("rows", [])] or inf
tr = load("train_step")
summary["train_step"] = [
    {k: r.get(k) for k in ("mode", "graph", "hits", "edges", "ms_median", "peak_mib", "step_mib",
                           "phases_ms_median", "compile_s_est", "graphs_compiled",
                           "graphs_compiled_while_timed", "host_syncs_per_step", "loss", "error")}
    for r in tr.get("rows", [])] or tr
summary["train_step_scaling"] = tr.get("scaling")
dl = load("dataloader")
summary["dataloader"] = [
    {k: r.get(k) for k in ("loader", "num_workers", "ms_per_step_median", "data_ms_median",
                           "compute_ms_median", "data_fraction", "slowdown_vs_preloaded",
                           "cache_build_s", "error")}
    for r in dl.get("rows", [])] or dl
tf = {mode: load(f"track_finding_{mode}") for mode in ("inference", "train")}
summary["track_finding"] = [
    {"mode": mode} | {k: r.get(k) for k in ("particles", "hits", "edges", "ms_median", "peak_mib",
                                            "step_mib", "memory_kind", "error")}
    for mode, doc in tf.items() for r in doc.get("rows", [])] or tf
summary["track_finding_scaling"] = {mode: (doc.get("scaling") or {}).get("segment_pairs")
                                    for mode, doc in tf.items()}
rg = {"cases": load("radius_graph_large").get("cases", [])}
summary["radius_graph"] = [
    {k: c.get(k) for k in ("particles", "frame", "num_points", "num_pairs")} | {
        "ckdtree_ms": (c.get("scipy_ckdtree_query_pairs") or {}).get("median_ms"),
        "builtin_cpu_f64_ms": (c.get("builtin_pairs_f64") or {}).get("median_ms"),
        "cuda_pairs_f64_ms": (c.get("cuda_pairs_f64") or {}).get("median_ms"),
        "cuda_pairs_f64_identical": (c.get("cuda_pairs_f64") or {}).get("identical_to_ckdtree"),
        "cuda_graph_f32_ms": (c.get("cuda_graph_f32") or {}).get("median_ms")}
    for c in rg["cases"]] or "missing"
print(json.dumps(summary, indent=1))
PYEOF
say "done"
