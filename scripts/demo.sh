#!/usr/bin/env bash
# The README's first command: set everything up from nothing, then run the whole chain on
# generated data: tiny SimMIM pretraining in MindSpore -> conversion to PyTorch -> UperNet
# segmentation on a generated ISPRS Potsdam -> the results table -> a report (Markdown and plots).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
PY="${RINGMOE_VENV:-$ROOT/.venv}/bin/python"
DEMO="${DEMO_DIR:-work_dirs/demo}"
STEPS="${DEMO_PRETRAIN_STEPS:-30}"

echo "== 1/4 pretraining a tiny RingMoE ($STEPS steps, MindSpore, CPU)"
"$PY" pretrain/train.py --config configs/pretrain/tiny.py --work-dir "$DEMO/pretrain" \
  --cfg-options "train.steps=$STEPS"
CKPT=$(ls -t "$DEMO"/pretrain/ringmoe-tiny-step"$STEPS".ckpt)

echo "== 2/4 converting $CKPT to PyTorch (no MindSpore needed)"
"$PY" converters/ms2torch.py "$CKPT" -o "$DEMO/ringmoe_tiny.pth" --arch tiny

echo "== 3/4 segmentation benchmark (UperNet + RingMoE, generated ISPRS Potsdam)"
"$PY" benchmarks/run.py --task segmentation --checkpoint "$DEMO/ringmoe_tiny.pth" \
  --work-dir "$DEMO/segmentation" --results "$DEMO/results.csv" "$@"

echo "== 4/4 report: $DEMO/report/report.md and its plots"
"$PY" benchmarks/report.py --results "$DEMO/results.csv" --out "$DEMO/report" --reference none
