"""localrag: local, offline answers over your documents with the DeepSeek-R1 distills.

The public API (see README, "Use from Python")::

    from localrag import LocalRAG
    with LocalRAG() as rag:
        rag.ingest(["docs/"], kb="mine")
        hits = rag.search("backup schedule", kb="mine")
        for event in rag.ask("When do backups run?", kb="mine"):
            ...

Names are loaded on first use, so ``import localrag`` (and ``localrag --help``) stays instant.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "LocalRAG": "localrag.api",
    "Conversation": "localrag.api",
    "KBInfo": "localrag.api",
    "DocumentInfo": "localrag.api",
    "SAMPLE_KB": "localrag.api",
    "sample_dir": "localrag.api",
    "Settings": "localrag.settings",
    "load_settings": "localrag.settings",
    "AskEvent": "localrag.rag.results",
    "Loading": "localrag.rag.results",
    "Loaded": "localrag.rag.results",
    "Retrieved": "localrag.rag.results",
    "Thinking": "localrag.rag.results",
    "AnswerDelta": "localrag.rag.results",
    "Done": "localrag.rag.results",
    "AnswerResult": "localrag.rag.results",
    "Citation": "localrag.rag.results",
    "Timings": "localrag.rag.results",
    "ModelInfo": "localrag.runtime.pool",
    "Hit": "localrag.kb.retrieve",
    "IngestReport": "localrag.kb.ingest",
    "IngestProgress": "localrag.kb.ingest",
    "FileOutcome": "localrag.kb.ingest",
    "Hardware": "localrag.models.hardware",
    "GPU": "localrag.models.hardware",
    "Plan": "localrag.models.fit",
    "Candidate": "localrag.models.fit",
    "LocalragError": "localrag.errors",
    "NotInstalled": "localrag.errors",
    "KBNotFound": "localrag.errors",
    "KBBusy": "localrag.errors",
    "DoesNotFit": "localrag.errors",
    "BadInput": "localrag.errors",
    "BadConfig": "localrag.errors",
    "PermissionDenied": "localrag.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'localrag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
