"""The model pool: one owner of a process's loaded models (what EngineCache was meant to be)."""

from __future__ import annotations

from localrag.models import hardware
from localrag.models.catalogue import load_catalogue
from localrag.runtime.pool import ModelPool
from localrag.settings import load_settings


def test_pool_loads_once_and_lets_go(home, smollm2_gguf, minilm_zip):
    settings = load_settings(generation={"ctx": 2048})
    pool = ModelPool(settings, load_catalogue(settings.catalogue_path), hardware.detect(settings.models_dir))
    try:
        engine, info = pool.engine("smollm2-135m-instruct")
        again, info2 = pool.engine("smollm2-135m-instruct")
        assert again is engine and info2 is info and pool.loaded is info
        assert info.starter and info.template == "gguf" and info.n_ctx == 2048
        emb = pool.embedder("minilm")  # an alias names the same embedder
        assert pool.embedder("all-minilm-l6-v2") is emb
        pool.close_engine()
        assert engine.llm is None and pool.loaded is None  # unloaded, memory given back
        engine3, _ = pool.engine("smollm2-135m-instruct")
        assert engine3 is not engine
    finally:
        pool.close()
