#!/usr/bin/env bash
# Issue 9's GPU checks in one run on an H100 / H200, from the repository root (docs/performance.md):
#
#   benchmarks/gpu_check.sh prepare          # here, once: .device_pkgs/ (Hydra, OmegaConf, ANTLR) from .venv
#   benchmarks/gpu_check.sh [STEP...]        # there: STEPs in order (default: bench default compile sweep bench384)
#
# Steps, most important first; each runs under its own `timeout` and all of them within GPU_CHECK_BUDGET_S
# (default 570 s: one device call); a step that no longer fits is skipped and says so:
#   bench     python -m benchmarks.cvt_bench --device cuda --compile at 224 px (eager and compiled, both models)
#   default   the default run on one GPU: python -m cvt_lab trainer=gpu (2 seeds; target >= 98.5% in <= 15 s)
#   compile   python -m benchmarks.compile_check: CvT-13 at 224 and 384 under inductor (graph breaks, recompiles)
#   sweep     python -m cvt_lab experiment=ablation_kv_stride launcher=gpus -m (the GPU launcher)
#   bench384  the benchmark at 384 px
# Writes into $OUT (default gpu_out/): gpu_check.log (every step's output), bench_gpu.{json,txt},
# bench_gpu_384.{json,txt}, default_run.json, compile_check.json, sweep.json. Run directories go to $WORK (default /tmp/gpu_check).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = prepare ]; then  # the GPU machine's torch environment lacks these pure-Python packages
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || exit 2
  rm -rf .device_pkgs && mkdir -p .device_pkgs
  for pkg in hydra omegaconf antlr4 hydra_core-*.dist-info omegaconf-*.dist-info antlr4_python3_runtime-*.dist-info; do
    cp -r "$site"/$pkg .device_pkgs/ || { echo "error: $pkg not in $site: run make install first" >&2; exit 2; }
  done
  echo "prepared .device_pkgs/ ($(du -sh .device_pkgs | cut -f1)); carry it to the GPU machine"
  exit 0
fi

STEPS=${*:-bench default compile sweep bench384}
for s in $STEPS; do
  case $s in bench|default|compile|sweep|bench384) ;;
    *) echo "error: unknown step '$s'; the steps are: bench default compile sweep bench384 (or prepare)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-gpu_out}
WORK=${WORK:-/tmp/gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/.device_pkgs:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.log"
START=$(date +%s)

step() {  # step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, what is left of the budget)
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 30 ]; then
    echo "== $name: skipped, ${left}s of the budget left" | tee -a "$LOG"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*" | tee -a "$LOG"
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t0 ))s$([ $rc -eq 124 ] && echo ' (timed out)')" | tee -a "$LOG"
}

{
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c 'import sys, torch, lightning, timm, transformers, hydra, omegaconf; print(sys.version.split()[0], "torch",
torch.__version__, "cuda", torch.version.cuda, "lightning", lightning.__version__, "timm", timm.__version__,
"transformers", transformers.__version__, "hydra", hydra.__version__)'
} >>"$LOG" 2>&1 || { echo "error: the environment is incomplete (see $LOG); carry .device_pkgs/" | tee -a "$LOG"; exit 2; }

for s in $STEPS; do
  case $s in
    bench) step bench 330 $PY -m benchmarks.cvt_bench --device cuda --compile --resolutions 224 \
             --out "$OUT/bench_gpu.json" ;;
    default) step default 120 $PY benchmarks/default_run.py --repeats 2 --target-wall-s 15 \
               --out "$OUT/default_run.json" trainer=gpu ;;
    compile) step compile 180 $PY -m benchmarks.compile_check --device cuda --presets cvt13 --sizes 224 384 \
               --out "$OUT/compile_check.json" ;;
    sweep)
      step sweep 240 $PY -m cvt_lab experiment=ablation_kv_stride launcher=gpus "paths.output_dir=$WORK" \
        trainer.enable_progress_bar=false -m
      $PY - "$WORK" "$OUT/sweep.json" >>"$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
from cvt_lab.results import RESULTS_FILE, read_record
keys = ("status", "test/acc1", "wall_s", "startup_s", "error")
jobs = {str(p.parent): {k: r.to_json().get(k) for k in keys}
        for p in sorted(Path(sys.argv[1]).glob(f"sweeps/**/{RESULTS_FILE}")) for r in [read_record(p.parent)]}
Path(sys.argv[2]).write_text(json.dumps(jobs, indent=1) + "\n")
print(f"sweep: {sum(j['status'] == 'finished' for j in jobs.values())} of {len(jobs)} jobs finished")
EOF
      ;;
    bench384) step bench384 300 $PY -m benchmarks.cvt_bench --device cuda --compile --image-size 384 \
                --resolutions 384 --no-levers --no-training-loop --out "$OUT/bench_gpu_384.json" ;;
  esac
done
echo "== done in $(( $(date +%s) - START ))s; files in $OUT" | tee -a "$LOG"
