#!/usr/bin/env bash
# Every GPU check of the training issue in one device call (see BENCHMARKS.md). Writes to $OUT.
#   bash benchmarks/gpu_suite.sh            (on the GPU machine, Ray importable)
set -u
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
OUT=${OUT:-/tmp/gpu-suite}; mkdir -p "$OUT"
PY=${PY:-python3}
D=/tmp/pines
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/log.txt"; }
log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader) cpus=$(nproc) torch=$($PY -c 'import torch;print(torch.__version__)')"
log "1. generate the paper-sized dataset"
/usr/bin/time -f "generate wall %e s" $PY jobs/generate.py --num-series 3847 --out $D 2>&1 | grep -E "wrote|wall" | tee -a "$OUT/log.txt"
log "2. throughput: plain loop vs Ray Train worker loop (bf16, compiled, batch 1024, data on GPU)"
log "2a. plain loop, torch.compile default mode (the earlier baseline: 168k plain / 147k Ray on an H200)"
timeout 90 $PY benchmarks/bench_train.py --data $D --device cuda --batch 1024 --precision bf16 --compile \
  --epochs 12 --modes plain --json "$OUT/bench_gpu_default.json" 2>&1 | grep -E "^(plain|ray)|Error" | tee -a "$OUT/log.txt"
log "2b. plain and Ray loops with CUDA graphs (compile mode reduce-overhead)"
timeout 200 $PY benchmarks/bench_train.py --data $D --device cuda --batch 1024 --precision bf16 --compile \
  --compile-mode reduce-overhead --epochs 12 --modes plain,ray-cache --json "$OUT/bench_gpu.json" 2>&1 \
  | grep -E "^(plain|ray)|Error" | tee -a "$OUT/log.txt"
log "3. jobs/train.py start-up + teardown overhead (fast preset, 3 epochs)"
/usr/bin/time -f "train.py wall %e s" $PY jobs/train.py --data $D --preset fast --use-gpu --out /tmp/runs/overhead \
  train.epochs=3 2>&1 | grep -E "wall|run directory" | tee -a "$OUT/log.txt"
$PY -c "
import csv; r=list(csv.DictReader(open('/tmp/runs/overhead/metrics.csv')))
print('epochs_s', round(sum(float(x['epoch_s']) for x in r),2), 'worker setup_s', round(float(r[0]['setup_s']),2))" | tee -a "$OUT/log.txt"
timeout 120 $PY benchmarks/bench_overhead.py --data $D 2>&1 | grep -E "^imports" | sed 's/^/cpu-tiny: /' | tee -a "$OUT/log.txt"
log "4. recipes: paper vs fast vs strong, evaluated on the test split"
timeout ${RECIPES_TIMEOUT:-360} $PY benchmarks/recipes.py --data $D --out /tmp/runs/recipes --device cuda \
  --runs ${RUNS:-strong-fast,paper-warmup,fast,fast-b128,fast-b64,strong,paper} --json "$OUT/recipes.json" 2>&1 | grep -E "^(paper|fast|strong|time-to-quality)|Error|error" | tee -a "$OUT/log.txt"
cp /tmp/runs/recipes/paper-warmup/eval/predictions.png "$OUT/paper_predictions.png" 2>/dev/null
cp /tmp/runs/recipes/paper-warmup/curve.png "$OUT/paper_curve.png" 2>/dev/null
tar -czf "$OUT/runs.tgz" -C /tmp/runs --exclude='*.pt' --exclude='ray' . 2>/dev/null
log "done"
