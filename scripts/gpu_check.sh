#!/usr/bin/env bash
# Everything vaelab measures on a GPU, in one run of under 8 minutes on an H100/H200, into one folder:
#   the GPU tests (pytest -m gpu), the benchmark on CUDA (a, b, c, d, bf16, compile), the replica's seconds per
#   epoch, experiment=mnist_binarized_vae (180 epochs) and its K = 5000 evaluation.
#
#   scripts/gpu_check.sh OUT_DIR              # on a machine with a GPU
#   scripts/gpu_check.sh OUT_DIR --dry-run    # the same steps on the CPU with tiny budgets: checks this script
#
# Prepared for the lent GPU machine of the `device` tool, whose image has PyTorch, Lightning, torchmetrics,
# TensorBoard, scikit-learn and matplotlib but no Hydra and no internet: scripts/gpu_prepare.sh puts the missing
# wheels (.gpu/wheels) and MNIST (.gpu/MNIST/raw/*.gz) into .gpu/, which travels with `carry: [".gpu"]`. Without
# .gpu/, the script uses what is installed and the data folder as they are.
# Each step has a time limit of its own (8 minutes together), so a slow step costs its own figures, not the others'.
# Not yet run on a GPU: the limits are estimates from the CPU figures and the H200's rates.
set -uo pipefail
OUT="${1:?usage: scripts/gpu_check.sh OUT_DIR [--dry-run]}"
DRY="${2:-}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.md"
start=$(date +%s)

if [ -d .gpu/wheels ] && ! "$PY" -c "import hydra" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-site .gpu/wheels/*.whl &&
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu-site"
fi
DATA="$PWD/data"
if [ -d .gpu/MNIST/raw ]; then
  mkdir -p "$DATA/MNIST/raw"
  for f in .gpu/MNIST/raw/*.gz; do
    name=$(basename "$f" .gz)
    [ -f "$DATA/MNIST/raw/$name" ] || gunzip -c "$f" > "$DATA/MNIST/raw/$name"
  done
fi

if [ "$DRY" = "--dry-run" ]; then
  TRAINER="trainer=cpu"; DEVICE=cpu; EPOCHS=1; K=10; LIMIT="++trainer.limit_train_batches=5 ++trainer.limit_test_batches=2"
  TESTS="VAELAB_GPU_TESTS_ON_CPU=1"; BENCH="--device cpu --epochs 1 --warmup 0 --repeats 1 --variants a,b,c,d"
  REPLICA_EPOCHS=1
else
  TRAINER="trainer=gpu"; DEVICE=cuda; EPOCHS=180; K=5000; LIMIT=""; TESTS=""
  BENCH="--device cuda --epochs 1 --warmup 1 --repeats 2 --variants a,b,c,d,c_bf16,c_compile"
  REPLICA_EPOCHS=10
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, note the outcome
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" bash -c "$*" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "| $name | $rc | $(( $(date +%s) - t0 )) s |" >> "$SUMMARY"
}

{
  echo "# vaelab on $( [ "$DRY" = "--dry-run" ] && echo "the CPU (dry run)" || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
  echo
  "$PY" -c "import torch, lightning, platform; print(f'python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, cuda {torch.version.cuda}')"
  echo
  echo "| step | exit code | time |"
  echo "|---|---|---|"
} > "$SUMMARY" 2>&1

step gpu_tests 120 "$TESTS $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py -rs"
step benchmark 120 "$PY scripts/benchmark.py --data-dir $DATA $BENCH"
step replica 45 "$PY src/train.py experiment=mnist_vae_reference $TRAINER trainer.max_epochs=$REPLICA_EPOCHS $LIMIT \
  data.data_dir=$DATA paths.log_dir=$OUT/logs hydra.run.dir=$OUT/logs/replica"
step binarized_train 150 "$PY src/train.py experiment=mnist_binarized_vae $TRAINER trainer.max_epochs=$EPOCHS $LIMIT \
  data.data_dir=$DATA paths.log_dir=$OUT/logs hydra.run.dir=$OUT/logs/binarized"
step binarized_eval 45 "$PY src/eval.py ckpt_path=$OUT/logs/binarized/checkpoints/last.ckpt protocol=iwae5000 \
  iw_k=$K device=$DEVICE paths.log_dir=$OUT/logs hydra.run.dir=$OUT/logs/binarized_eval"

{
  echo
  echo "## figures"
  grep -h "SUMMARY" "$OUT/benchmark.log" || true
  grep -hE "^Epoch " "$OUT/replica.log" | tail -3 || true
  grep -hE "^Epoch (1|180)/" "$OUT/binarized_train.log" || true
  grep -hE "neg_elbo|neg_iw_bound|seconds" "$OUT/binarized_eval.log" "$OUT/logs/binarized_eval/metrics.json" || true
  tail -3 "$OUT/gpu_tests.log"
  echo
  echo "total: $(( $(date +%s) - start )) s"
} >> "$SUMMARY" 2>&1
cp "$OUT/logs/binarized/metrics.json" "$OUT/binarized_train_metrics.json" 2>/dev/null || true
cp "$OUT/logs/binarized_eval/metrics.json" "$OUT/binarized_eval_metrics.json" 2>/dev/null || true
rm -rf "$OUT/logs"  # (checkpoints and events: too many files to bring back; the figures are in the logs above)
cat "$SUMMARY"
