"""The loaded models of one process, shared by every conversation, search and request in it.

A CLI chat, a script and the server all load a language model once and an embedder once per
(id, device); the pool is the one owner. It holds at most one language model: two rarely fit in
memory together, so asking for another closes the current one first. Loading is serialised by a
lock so two threads asking at once load once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class ModelInfo:
    id: str
    name: str
    quant: str
    path: Path
    starter: bool
    reasoning: bool
    n_ctx: int
    n_gpu_layers: int
    load_s: float = 0.0
    params: float = 1.5e9  # for the prefill-speed guess before one is measured
    cores: int = 2
    note: str | None = None  # why this model (e.g. the starter because no distill is installed)
    template: str = "r1"


class ModelPool:
    """Loaded engines and embedders for one settings/catalogue/hardware triple."""

    def __init__(self, settings, catalogue, hardware):
        self.settings = settings
        self.catalogue = catalogue
        self.hardware = hardware
        self._lock = threading.RLock()
        self._engine = None
        self._info: ModelInfo | None = None
        self._engine_key: tuple | None = None
        self._embedders: dict[tuple[str, str], object] = {}

    # -- language model ---------------------------------------------------------------------

    def resolve(self, spec: str | None):
        """The installed model ``spec`` names (None: the machine's choice). Loads nothing."""
        from localrag.models.resolve import resolve_model

        return resolve_model(self.settings, self.catalogue, spec, self.hardware)

    def engine(self, spec: str | None, progress: Callable[[str], None] | None = None):
        """(Engine, ModelInfo) for ``spec``; the loaded one again when it is the same model.

        With ``settings.llm_url`` the engine is a ``runtime.remote.RemoteEngine`` on that server
        and ``spec`` (or ``settings.llm_model``) names one of the models it serves."""
        if self.settings.llm_url:
            return self._remote(spec, progress)
        installed = self.resolve(spec)
        key = (str(Path(installed.path).resolve()), installed.quant)
        with self._lock:
            if self._engine is not None and self._engine_key == key:
                return self._engine, self._info
            self.close_engine()
            if progress:
                progress(f"loading {installed.spec.name} {installed.quant}")
            self._engine, self._info = self._load(installed)
            self._engine_key = key
            return self._engine, self._info

    def _load(self, installed):
        from localrag.runtime.engine import open_engine

        ms = installed.spec
        started = time.perf_counter()
        engine = open_engine(self.settings, self.catalogue, installed, hardware=self.hardware)
        info = ModelInfo(
            id=ms.id,
            name=ms.name,
            quant=installed.quant,
            path=installed.path,
            starter=bool(installed.starter or ms.starter),
            reasoning=bool(ms.reasoning and engine.reasoning),
            n_ctx=engine.n_ctx,
            n_gpu_layers=engine.n_gpu_layers,
            load_s=time.perf_counter() - started,
            params=(ms.params_b or 1.5) * 1e9,
            cores=self.hardware.cpu_cores_physical or 1,
            note=installed.note,
            template=ms.template,
        )
        return engine, info

    def _remote(self, spec: str | None, progress):
        from localrag.runtime.remote import RemoteEngine

        s = self.settings
        wanted = s.llm_model or spec
        key = ("remote", s.llm_url, wanted)
        with self._lock:
            if self._engine is not None and self._engine_key == key:
                return self._engine, self._info
            self.close_engine()
            if progress:
                progress(f"connecting to {s.llm_url}")
            started = time.perf_counter()
            engine = RemoteEngine.connect(s.llm_url, model=wanted, api_key=s.llm_api_key, ctx=s.llm_ctx)
            info = ModelInfo(
                id=engine.model, name=engine.model.replace("\\", "/").rsplit("/", 1)[-1], quant="remote",
                path=Path(engine.model), starter=False, reasoning=engine.reasoning, n_ctx=engine.n_ctx,
                n_gpu_layers=0, load_s=time.perf_counter() - started,
                cores=self.hardware.cpu_cores_physical or 1,
                note=f"generation on {s.llm_url}" + ("" if engine.tokenizes else " (token counts estimated)"),
                template=engine.template,
            )
            self._engine, self._info, self._engine_key = engine, info, key
            return engine, info

    @property
    def loaded(self) -> ModelInfo | None:
        return self._info

    def close_engine(self) -> None:
        with self._lock:
            if self._engine is not None:
                close = getattr(self._engine, "close", None)
                if close:
                    close()
            self._engine, self._info, self._engine_key = None, None, None

    # -- embedders --------------------------------------------------------------------------

    def embedder(self, embedder_id: str, device: str = "cpu"):
        """The loaded embedder ``embedder_id`` on ``device`` (loaded on first use)."""
        from localrag.runtime import embedder as embed_mod

        canonical = embed_mod.canonical_id(self.settings, embedder_id, self.catalogue)
        key = (canonical, device)
        with self._lock:
            if key not in self._embedders:
                self._embedders[key] = embed_mod.load_for(self.settings, canonical, device, self.catalogue)
            return self._embedders[key]

    def close(self) -> None:
        with self._lock:
            self.close_engine()
            self._embedders.clear()
