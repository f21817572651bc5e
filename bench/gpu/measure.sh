#!/usr/bin/env bash
# Needs .gpucheck/ carried to the GPU machine: the slimmed llama-cpp-python sdist, a few wheels, and
# the cached SmolLM2 BPE json for tests/synthgguf (see BENCHMARKS.md, "GPU check").
set -ux
cd "$(dirname "$0")/../.."
python3 -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload()" 2>/dev/null || [ -n "${GPUCHECK_BUILT:-}" ] || { echo "no CUDA build here: building"; bash bench/gpu/build_and_measure.sh; exit; }
export LOCALRAG_TEST_CACHE=/tmp/lrcache
python3 - <<'PY'
import llama_cpp  # before numpy/gguf: the other order segfaulted this CUDA build at start
import json, sys, os, runpy
sys.path.insert(0, ".")
from tests import synthgguf
data = json.load(open(".gpucheck/smollm2-bpe-98362432.json"))
synthgguf._smollm2_tokenizer = lambda: (data["tokens"], data["types"], data["merges"])
sys.argv = ["bench_gpu_estimate.py", "--json", os.environ["OUT"] + "/gpu_estimate.json"]
runpy.run_path("bench/bench_gpu_estimate.py", run_name="__main__")
PY
