#!/usr/bin/env bash
set -ux
cd "$(dirname "$0")/.."
python3 -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload()" 2>/dev/null || [ -n "${GPUCHECK_BUILT:-}" ] || { echo "no CUDA build here: building"; bash .gpucheck/run.sh; exit; }
export LOCALRAG_TEST_CACHE=/tmp/lrcache
python3 - <<'PY'
import json, sys, os, runpy
sys.path.insert(0, ".")
from tests import synthgguf
data = json.load(open(".gpucheck/smollm2-bpe-98362432.json"))
synthgguf._smollm2_tokenizer = lambda: (data["tokens"], data["types"], data["merges"])
sys.argv = ["bench_gpu_estimate.py", "--json", os.environ["OUT"] + "/gpu_estimate.json"]
runpy.run_path("bench/bench_gpu_estimate.py", run_name="__main__")
PY
python3 -m localrag doctor --json > $OUT/doctor.json 2>$OUT/doctor.err
python3 -m localrag doctor > $OUT/doctor.txt 2>&1
tail -5 $OUT/doctor.err
