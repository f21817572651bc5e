"""What a localrag program (the CLI, the server) sets up for its own process, once, at start.

The library below the front doors never touches process-wide state; a program that owns its
process may. Here: keep the model hub offline (every lookup already passes
``local_files_only=True``; the variables are a second lock for libraries we call indirectly),
stop gRPC's C core from printing keepalive chatter to the terminal, and drop the noise other
libraries log (Milvus Lite logs a traceback of its own before pymilvus reports a failed open;
grpc logs Milvus Lite's refusal of AllocTimestamp with a traceback; jieba announces its
dictionary) without hiding their errors. localrag's own warnings (logger ``localrag``) go to
stderr as one line each.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# logger -> the least level that still gets through
_NOISY = {
    "milvus_lite": logging.CRITICAL,
    "pymilvus": logging.ERROR,
    "grpc._server": logging.CRITICAL,
    "jieba": logging.WARNING,
    "sentence_transformers": logging.WARNING,
    "transformers": logging.ERROR,
    "huggingface_hub": logging.ERROR,
}


class _AtLeast(logging.Filter):
    """A filter survives a library resetting its logger's level at import; a level would not."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


_done = False


def setup(*, online: bool = False, warn=None) -> None:
    """Prepare this process for localrag. ``online``: let the hub client go online (``models
    pull`` only). ``warn(message)``: how localrag's own warnings reach the user (default: one
    line on stderr)."""
    global _done
    if not online:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if _done:
        return
    _done = True
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|sentence_transformers)")
    for name, level in _NOISY.items():
        logging.getLogger(name).addFilter(_AtLeast(level))
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_AtLeast(level))
    own = logging.getLogger("localrag")
    own.setLevel(logging.INFO)
    own.propagate = False
    own.addHandler(_Callback(warn or _to_stderr))


def _to_stderr(line: str) -> None:
    # sys.stderr looked up per line: it may have been replaced since setup (tests, a TUI)
    sys.stderr.write(line + "\n")


class _Callback(logging.Handler):
    """One line per record, "warning: ..." (lower case, as the CLI writes its errors)."""

    def __init__(self, fn):
        super().__init__(logging.WARNING)
        self.fn = fn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.fn(f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}")
        except Exception:  # noqa: BLE001 - a display problem must not break the work
            self.handleError(record)
