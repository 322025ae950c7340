#!/usr/bin/env bash
# The JEPA pretraining-variant and label-efficiency study on one GPU machine, in parallel shards
# (small events are latency-bound: several processes share the GPU and the CPU cores).
# Usage: OUT=dir bash studies/label_efficiency/gpu_study.sh   (from anywhere; OUT is relative to
# the repository root; writes $OUT/study_<shard>.json and logs)
# A GPU version of the first study (docs/studies/label-efficiency.md) with more variants. Its
# "hit queries" shard is gone from main (run it at tag studies-2026-12).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
OUT=${OUT:-gpu_out}
PRE_STEPS=${PRE_STEPS:-800}
FT_STEPS=${FT_STEPS:-150}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} WANDB_MODE=disabled
run() {  # name, extra args...
  local name=$1; shift
  timeout ${STUDY_TIMEOUT:-420} python3 -m studies.label_efficiency.run --pretrain-steps "$PRE_STEPS" \
    --finetune-steps "$FT_STEPS" --seeds 0,1,2 --out "runs/study/$name" --json "$OUT/study_$name.json" \
    "$@" > "$OUT/study_$name.log" 2>&1 &
}
# warm the event cache once so the shards do not all simulate the same events
python3 - <<'PY'
import yaml
from gnn_jepa.datamodule import EventDataModule
for cfg, kw in (("configs/pretrain/trackml_small.yaml", {}),
                ("configs/finetune/trackml_small.yaml", {"num_train": 100})):
    d = yaml.safe_load(open(cfg))["data"]; d.update(kw)
    EventDataModule(**d).prepare_data()
PY
run scratch   --arms scratch --labels 1,10,100 --variants '{}'
run vicreg_p0 --arms finetune,frozen --labels 1,10,100 --pretrain-seeds 0 --variants '{"vicreg": {}}'
run vicreg_p1 --arms finetune,frozen --labels 1,10 --pretrain-seeds 1 --variants '{"vicreg": {}}'
run ac        --arms finetune --labels 1,10 --variants '{"no anti-collapse": {"anti_collapse": "none"}, "sigreg": {"anti_collapse": "sigreg"}}'
run scope     --arms finetune --labels 1,10 --variants '{"full-event targets": {"target_scope": "full"}, "occupied cells only": {"score_empty_cells": false}}'
run cells     --arms finetune --labels 1,10 --variants '{"one cell per region": {"cells": [1, 1, 1]}}'
wait
python3 - "$OUT" <<'PY'
import glob, json, sys
rows = []
for f in sorted(glob.glob(f"{sys.argv[1]}/study_*.json")):
    rows += json.load(open(f))["rows"]
from studies.label_efficiency.run import markdown, summarize
s = summarize(rows)
json.dump({"rows": rows, "summary": s}, open(f"{sys.argv[1]}/study_all.json", "w"), indent=1)
print(markdown(s))
PY
