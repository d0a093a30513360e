#!/usr/bin/env bash
# Every GPU check of the training issue in one device call (see BENCHMARKS.md). Writes to $OUT.
#   bash benchmarks/gpu_suite.sh            (on the GPU machine, Ray importable)
# A device call may run 600 s at most, so the suite keeps to SUITE_BUDGET_S (default 560): each step's
# timeout is cut to what is left, steps that no longer fit are skipped (logged), and the most wanted
# results come first. A second call on the same warm machine finishes the rest: the dataset is kept
# and benchmarks/recipes.py --resume skips the recipes already in $OUT/recipes.json.
set -u
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
OUT=${OUT:-/tmp/gpu-suite}; mkdir -p "$OUT"
PY=${PY:-python3}
D=/tmp/pines
T0=$(date +%s); BUDGET=${SUITE_BUDGET_S:-560}
log() { echo "== $(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s $*" | tee -a "$OUT/log.txt"; }
# tmo WANT: WANT seconds, or what is left of the budget if less; prints 0 when under MIN (20 s) is left
# timeouts send SIGINT first, so a killed driver still shuts its embedded Ray down (and frees the GPU);
# each step first stops any Ray process an earlier one left behind
TIMEOUT="timeout -s INT -k 20"
cleanup() { $PY -m ray.scripts.scripts stop --force >/dev/null 2>&1; }
tmo() { local left=$(( BUDGET - ($(date +%s) - T0) )); local t=$(( $1 < left ? $1 : left )); (( t < 20 )) && t=0; echo $t; }
step() { cleanup; local t; t=$(tmo "$1"); shift; if (( t == 0 )); then log "SKIPPED (budget spent): $*"; return 1; fi; log "$* (timeout ${t}s)"; TMO=$t; }
recipes() {  # recipes RUN,RUN,...: appended to $OUT/recipes.json (runs already there are skipped)
  $TIMEOUT "$TMO" $PY benchmarks/recipes.py --data $D --out /tmp/runs/recipes --device cuda --resume \
    --runs "$1" --json "$OUT/recipes.json" 2>&1 | grep -E "^(paper|fast|strong|time-to-quality|skip)|Error|error" | tee -a "$OUT/log.txt"
}

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader) cpus=$(nproc) torch=$($PY -c 'import torch;print(torch.__version__)') budget=${BUDGET}s"
if [ -f $D/dataset.json ]; then log "1. dataset kept from an earlier call: $D"
else
  log "1. generate the paper-sized dataset"
  /usr/bin/time -f "generate wall %e s" $PY jobs/generate.py --num-series 3847 --out $D 2>&1 | grep -E "wrote|wall" | tee -a "$OUT/log.txt"
fi

# 2. time to quality: strong-fast (CPU: 1/24 of the reference's training time) and the reference
step 300 "2. recipes: strong-fast vs paper-warmup (time to quality), evaluated on the test split" \
  && recipes strong-fast,paper-warmup

# 3. throughput: the earlier baseline was 168k plain / 147k Ray series/s on an H200 (default compile mode)
step 90 "3a. throughput, plain loop, bf16, compiled (default mode), batch 1024, data on GPU" \
  && $TIMEOUT "$TMO" $PY benchmarks/bench_train.py --data $D --device cuda --batch 1024 --precision bf16 --compile \
       --epochs 12 --modes plain --json "$OUT/bench_gpu_default.json" 2>&1 | grep -E "^(plain|ray)|Error" | tee -a "$OUT/log.txt"
step 200 "3b. throughput, plain and Ray Train loops with CUDA graphs (compile mode reduce-overhead)" \
  && $TIMEOUT "$TMO" $PY benchmarks/bench_train.py --data $D --device cuda --batch 1024 --precision bf16 --compile \
       --compile-mode reduce-overhead --epochs 12 --modes plain,ray-cache --json "$OUT/bench_gpu.json" 2>&1 \
     | grep -E "^(plain|ray)|Error" | tee -a "$OUT/log.txt"

# 4. start-up + teardown of the job (goal <= 15 s)
if step 120 "4a. jobs/train.py start-up + teardown overhead (fast preset, 3 epochs)"; then
  /usr/bin/time -f "train.py wall %e s" $TIMEOUT "$TMO" $PY jobs/train.py --data $D --preset fast --use-gpu \
    --out /tmp/runs/overhead train.epochs=3 2>&1 | grep -E "wall|run directory" | tee -a "$OUT/log.txt"
  $PY -c "
import csv; r=list(csv.DictReader(open('/tmp/runs/overhead/metrics.csv')))
print('epochs_s', round(sum(float(x['epoch_s']) for x in r),2), 'worker setup_s', round(float(r[0]['setup_s']),2))" 2>&1 | tee -a "$OUT/log.txt"
fi
step 100 "4b. Ray Train phases (tiny model, CPU worker)" \
  && $TIMEOUT "$TMO" $PY benchmarks/bench_overhead.py --data $D 2>&1 | grep -E "^imports" | sed 's/^/cpu-tiny: /' | tee -a "$OUT/log.txt"

# 5. the paper's own model trained fast, the strong preset, the published recipe: whatever time is left
step 600 "5. recipes: fast variants of the paper's model, strong, paper as published" \
  && recipes ${RUNS:-fast,fast-b128,fast-b64,strong,paper}

cp /tmp/runs/recipes/paper-warmup/eval/predictions.png "$OUT/paper_predictions.png" 2>/dev/null
cp /tmp/runs/recipes/strong-fast/eval/predictions.png "$OUT/strong_fast_predictions.png" 2>/dev/null
tar -czf "$OUT/runs.tgz" -C /tmp/runs --exclude='*.pt' --exclude='ray' . 2>/dev/null
log "done"
