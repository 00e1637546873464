#!/usr/bin/env bash
# The seed zoo end to end on generated data: for gMLP, BiT, Multigrain and DINO, a demo recipe in
# MindSpore (pretrain/zoo) -> conversion to PyTorch (ms2torch --family) -> a linear probe and DINO's
# k-NN on a generated NWPU-RESISC45 (and Multigrain's instance retrieval on a generated INRIA
# Holidays) -> one results table. Smoke figures: a few steps of pretraining on tiny variants.
#   bash scripts/zoo_demo.sh                 # all four families (about 10 minutes on 2 CPUs)
#   bash scripts/zoo_demo.sh gmlp dino       # some of them
# Run scripts/setup.sh first (scripts/demo.sh does).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY="${RINGMOE_VENV:-$ROOT/.venv}/bin/python"
DEMO="${DEMO_DIR:-work_dirs/zoo_demo}"
RESULTS="$DEMO/results.csv"
CLS=configs/benchmarks/classification

# family -> "pretraining demo config, converter variant, linear-probe lr, extra benchmark (task:config) or -".
# Multigrain's GeM features are large (norms 16-115): the probe's default lr 0.1 diverges there.
declare -A PLAN=(
  [gmlp]="gmlp_ti_demo gmlp_tiny_demo 0.1 -"
  [bit]="bit_hyperrule_demo bit_tiny 0.1 -"
  [multigrain]="multigrain_r50_demo multigrain_resnet18 0.001 retrieval:configs/benchmarks/retrieval/gem_converted_holidays.py"
  [dino]="dino_vits16_demo dino_vit_demo 0.1 -"
)
FAMILIES=("$@")
[ ${#FAMILIES[@]} -eq 0 ] && FAMILIES=(gmlp bit multigrain dino)

for family in "${FAMILIES[@]}"; do
  [ -n "${PLAN[$family]:-}" ] || { echo "zoo_demo: unknown family $family (gmlp, bit, multigrain, dino)" >&2; exit 2; }
  read -r config variant lr extra <<<"${PLAN[$family]}"
  echo "== $family: pretraining ($config, MindSpore, CPU)"
  "$PY" pretrain/train.py --config "configs/pretrain/zoo/$config.py" --work-dir "$DEMO/$family/pretrain"
  ckpt="$DEMO/$family/pretrain/$(cat "$DEMO/$family/pretrain/last_checkpoint")"
  echo "== $family: converting $ckpt"
  "$PY" converters/ms2torch.py "$ckpt" -o "$DEMO/$family/$variant.pth" --family "$family:$variant"
  for bench in "classification:$CLS/linear_converted_nwpu.py" "classification:$CLS/knn_converted_nwpu.py" $extra; do
    [ "$bench" = - ] && continue
    task=${bench%%:*}
    cfg=${bench#*:}
    options=()
    [[ "$cfg" == *linear_* ]] && options=(--cfg-options "optim_wrapper.optimizer.lr=$lr")
    echo "== $family: $task ($(basename "$cfg" .py))"
    "$PY" benchmarks/run.py --task "$task" --config "$cfg" --checkpoint "$DEMO/$family/$variant.pth" \
      --work-dir "$DEMO/$family/$(basename "$cfg" .py)" --results "$RESULTS" "${options[@]}"
  done
done
echo "== results: $RESULTS"
"$PY" -c "import sys; from benchmarks.results import format_table, read_rows; print(format_table(read_rows(sys.argv[1])))" "$RESULTS"
