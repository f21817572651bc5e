#!/usr/bin/env bash
# Needs .gpucheck/ carried to the GPU machine: the slimmed llama-cpp-python sdist, a few wheels, and
# the cached SmolLM2 BPE json for tests/synthgguf (see BENCHMARKS.md, "GPU check").
# On the lent GPU machine: CUDA build of llama-cpp-python from the carried source, then the estimate check.
set -uxo pipefail
cd "$(dirname "$0")/../.."
PY=python3
$PY -m pip install -q --no-index --no-deps .gpucheck/wheels/*.whl
mkdir -p /tmp/src && tar xzf .gpucheck/llama-src-slim.tar.gz -C /tmp/src
start=$(date +%s)
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=OFF" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  $PY -m pip install -q --no-build-isolation --no-deps /tmp/src/llama_cpp_python-0.3.36 2>&1 | tail -5
echo "build_s=$(( $(date +%s) - start ))"
GPUCHECK_BUILT=1 bash bench/gpu/measure.sh
