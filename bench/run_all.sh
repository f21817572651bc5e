#!/usr/bin/env bash
# Run every bench script that exists, one after another, in one go: the figures in
# BENCHMARKS.md come from one such run on a quiet machine. Extra arguments (e.g. --quick) go to
# every script. Output: each script's table on stdout, JSON in bench/out/, a log in
# bench/out/run_all-<UTC time>.log. A failing script is reported and the run goes on.
#
#   bench/run_all.sh [--quick]
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p bench/out
LOG="bench/out/run_all-$(date -u +%Y%m%dT%H%M%SZ).log"

# Ordered so the cheapest figures come first and nothing measured runs beside a bench that
# just finished writing gigabytes (the synthetic GGUFs are made by the generation bench).
SCRIPTS=(
  bench_bandwidth.py
  bench_generation.py
  bench_followup.py
  bench_memory_estimate.py
  bench_ingest.py
  bench_query.py
  bench_coldstart.py
  bench_rss.py
)
# ...then any other bench_*.py someone added, so "every bench script that exists" stays true.
for f in bench/bench_*.py; do
  name=$(basename "$f")
  [[ " ${SCRIPTS[*]} " == *" $name "* ]] || SCRIPTS+=("$name")
done

{
  echo "# run_all $(date -u +%FT%TZ) args: $*"
  echo "# $(uptime)"
  echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM"
} | tee "$LOG"

# Need a GPU and a CUDA build of llama-cpp-python (the lent accelerator machine; bench/gpu/).
GPU_ONLY=" bench_gpu_estimate.py "
# A/B tools, not figures: each answers the dev set with the real 1.5B over a whole-corpus KB that
# must be built first, and is run by hand at two commits (see their docstrings, BENCHMARKS §14, §16, §25).
AB_TOOLS=" bench_answers_greedy.py bench_hyde.py bench_packing.py "
has_gpu=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && has_gpu=1

failed=()
for s in "${SCRIPTS[@]}"; do
  [ -f "bench/$s" ] || { echo "## $s: not present, skipped" | tee -a "$LOG"; continue; }
  if [[ "$AB_TOOLS" == *" $s "* ]]; then
    echo "## $s: an A/B tool run by hand on a prepared KB, skipped" | tee -a "$LOG"; continue
  fi
  if [[ "$GPU_ONLY" == *" $s "* && $has_gpu -eq 0 ]]; then
    echo "## $s: needs a GPU, skipped" | tee -a "$LOG"; continue
  fi
  echo "## $s  (load: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$LOG"
  start=$(date +%s)
  if "$PY" "bench/$s" "$@" 2>&1 | tee -a "$LOG"; [ "${PIPESTATUS[0]}" -ne 0 ]; then
    failed+=("$s")
  fi
  echo "## $s took $(( $(date +%s) - start )) s" | tee -a "$LOG"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "## FAILED: ${failed[*]}" | tee -a "$LOG"
  exit 1
fi
echo "## all done; log: $LOG" | tee -a "$LOG"
