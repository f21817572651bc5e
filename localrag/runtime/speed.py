"""This machine's measured prompt-reading speed per model, kept between questions and runs.

The packer sizes each prompt from the time it may take to read (rag/prompt.py); a measurement of
this machine beats the first-run estimate from the model's size and the cores.
"""

from __future__ import annotations

import json
from pathlib import Path

from localrag.runtime.pool import ModelInfo


class PrefillMemory:
    """This machine's measured prompt-reading speed per model, so the next question sizes its
    prompt from a measurement instead of a guess. With a ``path`` it survives the process
    (``perf.json`` in the data directory, written atomically); without one it lives in memory.
    A running average keeps one noisy run from ruling."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._data: dict = {}
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._data = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._data = {}

    @staticmethod
    def key(info: ModelInfo) -> str:
        return f"{info.id}:{info.quant}:gpu{info.n_gpu_layers}"

    def get(self, info: ModelInfo) -> float | None:
        try:
            value = self._data.get(self.key(info), {}).get("prefill_tok_s")
            return float(value) if value else None
        except (AttributeError, TypeError, ValueError):
            return None

    def put(self, info: ModelInfo, tok_s: float) -> None:
        old = self.get(info)
        value = tok_s if not old else 0.5 * old + 0.5 * tok_s
        self._data[self.key(info)] = {"prefill_tok_s": round(value, 1)}
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
            tmp.replace(self.path)
        except OSError:
            pass  # a read-only data dir only costs us the better estimate
