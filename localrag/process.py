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

import importlib.abc
import importlib.util
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


def _quiet() -> None:
    for name, level in _NOISY.items():
        logging.getLogger(name).setLevel(level)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback`` once module ``name`` has finished executing (a post-import hook)."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # find the real spec with the other finders
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, callback, finder = spec.loader, self.callback, self

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                module.__loader__ = loader  # the module keeps its real loader (resources, reload)
                if module.__spec__ is not None:
                    module.__spec__.loader = loader
                if finder in sys.meta_path:
                    sys.meta_path.remove(finder)
                callback()

        spec.loader = _Loader()
        return spec


def _after_import(name: str, callback) -> None:
    if name in sys.modules:
        callback()
        return
    sys.meta_path.insert(0, _AfterImport(name, callback))


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
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress display only
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if _done:
        return
    _done = True
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|sentence_transformers)")
    _quiet()
    # pymilvus configures its loggers when it is imported (dictConfig, its own handler): quiet
    # them again right after that import, whenever it happens.
    for package in ("pymilvus", "milvus_lite", "jieba"):
        _after_import(package, _quiet)
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
