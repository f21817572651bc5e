#!/usr/bin/env bash
# The main job on a fresh machine: install, check the hardware, index the shipped sample, answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate 2>/dev/null || true

localrag doctor
localrag ingest localrag/data/sample --kb sample
localrag ask "How does localrag pick a model for my machine?" --kb sample --verbose
echo
echo "Next: localrag ingest ~/Documents --kb mine && localrag chat --kb mine"
