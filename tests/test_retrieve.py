"""Hybrid retrieval over a small real KB: fusion, scores, filters, Chinese, `search --json`."""

from __future__ import annotations

import json

import pytest

from localrag.kb import ingest as ingest_mod
from localrag.errors import LocalragError as UserError
from localrag.kb.retrieve import Retriever, glob_match, rrf
from tests.kb_helpers import embedder, install_minilm, minilm_dir, run_cli, settings_for, small_corpus, small_kb_home  # noqa: F401


@pytest.fixture(scope="module")
def kb_home(small_kb_home):
    return small_kb_home


@pytest.fixture
def kb(kb_home):
    return settings_for(kb_home)


def test_rrf_weights_and_ties():
    scores = rrf([["a", "b", "c"], ["c", "a"]], [1.0, 1.0], 60)
    assert max(scores, key=scores.get) == "a"
    assert scores["c"] > scores["b"]
    only_dense = rrf([["a", "b"], ["b", "a"]], [1.0, 0.0], 60)
    assert only_dense["a"] > only_dense["b"]


def test_glob_semantics():
    assert glob_match("en/faq/product_faq.md", "en/**/*.md")
    assert glob_match("en/product_faq.md", "en/**/*.md")
    assert glob_match("deep/er/x.md", "*.md")  # no '/': matches the file name
    assert not glob_match("zh/x.md", "en/**")
    assert glob_match("en/a/b.pdf", "en/**")


def test_hybrid_hits_carry_both_scores_and_provenance(kb, embedder):
    with Retriever(kb, "t", embedder=embedder) as r:
        hits = r.search("Which reranker model is used if model_name is not given to BGERerankFunction?", k=5)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert hits[0].source == "en/rerankers-bge.md"
        assert "bge-reranker-v2-m3" in " ".join(h.text for h in hits[:3])
        assert all(h.dense_score is not None and -1.0 <= h.dense_score <= 1.0 for h in hits)
        assert hits[0].sparse_score and hits[0].sparse_score > 0
        assert hits[0].score >= hits[-1].score and len({h.chunk_id for h in hits}) == 5
        assert hits[0].filetype == "markdown" and hits[0].char_end > hits[0].char_start

        # an exact rare keyword is found through BM25 even in a tiny text file
        zebra = r.search("zebra nlist", k=3)
        assert zebra[0].source == "notes.txt" and zebra[0].sparse_score > 0


def test_filters_by_glob_and_type(kb, embedder):
    with Retriever(kb, "t", embedder=embedder) as r:
        hits = r.search("milvus", k=10, glob="zh/**")
        assert hits and all(h.source.startswith("zh/") for h in hits)
        hits = r.search("milvus", k=10, glob="*.txt")
        assert [h.source for h in hits] == ["notes.txt"]  # a very selective filter still returns its match
        assert r.search("milvus", k=5, glob="nothing/**") == []
        hits = r.search("milvus", k=10, filetypes=["text"])
        assert {h.source for h in hits} == {"notes.txt"}
        assert r.search("milvus", k=5, filetypes=["pdf"]) == []
        with pytest.raises(UserError, match="invalid file type"):
            r.search("milvus", filetypes=['md"] or true'])
        with pytest.raises(UserError, match="empty"):
            r.search("   ")


def test_chinese_question_finds_chinese_document(kb, embedder):
    with Retriever(kb, "t", embedder=embedder) as r:
        hits = r.search("Milvus 向量数据库是什么？", k=3)
        assert any(h.source.startswith("zh/") for h in hits)
        assert hits[0].source.startswith("zh/")


def test_query_with_another_embedder_is_refused(kb, embedder):
    import dataclasses

    other = dataclasses.replace(kb, embedder="multilingual-e5-small")
    with pytest.raises(UserError, match="was built with embedder 'all-minilm-l6-v2'"):
        Retriever(other, "t")
    alias = dataclasses.replace(kb, embedder="minilm")  # an alias of the KB's own embedder is fine
    with Retriever(alias, "t", embedder=embedder) as r:
        assert r.search("flush", k=1)


def test_cli_search_json(kb_home, minilm_dir):
    home = kb_home
    install_minilm(home, minilm_dir)
    r = run_cli(["search", "How does Milvus flush data?", "--kb", "t", "--json", "-k", "3"], home)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 3
    for key in ("rank", "score", "text", "source", "page", "heading", "chunk_id", "dense_score", "sparse_score"):
        assert key in hits[0]
    assert hits[0]["source"].startswith("en/") and hits[0]["page"] is None
    r = run_cli(["search", "flush", "--kb", "missing"], home)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_merge_window_is_the_documents_span():
    from localrag.kb.retrieve import merge_window

    text = "Alpha one. Beta two.\n\nGamma three. Delta four."
    chunks = [
        {"text": text[0:15], "char_start": 0, "char_end": 15},
        {"text": text[11:20], "char_start": 11, "char_end": 20},  # overlaps the first
        {"text": text[22:35], "char_start": 22, "char_end": 35},  # after trimmed whitespace
    ]
    assert merge_window(chunks) == text[0:35]
    assert merge_window(chunks[:1]) == text[0:15]


def test_hits_are_windows_with_provenance_and_no_repeats(kb, embedder):
    import re
    from pathlib import Path

    from localrag.kb.parse import parse_file

    with Retriever(kb, "t", embedder=embedder) as r:
        hits = r.search("How does Milvus flush data, and why is search slow right after an insert?", k=5)
    assert hits
    ids = [c for h in hits for c in h.chunk_ids]
    assert len(ids) == len(set(ids))  # a chunk inside a better hit's window is not a hit again
    assert any(len(h.chunk_ids) > 1 for h in hits)  # neighbours were added
    for h in hits:
        assert h.chunk_id in h.chunk_ids
        assert embedder.count_tokens(h.text) <= kb.retrieval.window_tokens
        doc = parse_file(Path(h.path))
        span = doc.text[h.char_start : h.char_end]
        # the span is the document's own text (between chunks only whitespace is normalised)
        assert re.sub(r"\s+", " ", span) == re.sub(r"\s+", " ", h.text)


def test_windows_and_sentence_scores_can_be_turned_off(kb_home, embedder):
    plain = settings_for(kb_home, retrieval={"window_tokens": 0, "sentence_pool": 0})
    with Retriever(plain, "t", embedder=embedder) as r:
        hits = r.search("How does Milvus flush data?", k=5)
    assert hits and all(h.chunk_ids == [h.chunk_id] for h in hits)


def test_sentence_vectors_are_stored_at_ingest_and_used_at_query_time(kb, embedder, monkeypatch):
    """The sentence-level re-score reads the vectors ingest stored: a query embeds only itself.
    They are the vectors of the chunk's own sentences, as a query-time embedding would make them."""
    import numpy as np

    from localrag.kb.chunk import split_sentences

    with Retriever(kb, "t", embedder=embedder) as r:
        assert r.index.has_sentences and r.index.record.schema == 2
        rows = r.index.all_chunks(("id", "text"))
        stored = r.index.sentence_vectors([row["id"] for row in rows])
        assert set(stored) == {row["id"] for row in rows}  # every chunk has at least one sentence
        row = max(rows, key=lambda x: len(split_sentences(x["text"])))
        sentences = split_sentences(row["text"])
        fresh = embedder.embed_passages([embedder.passage_text(x) for x in sentences])
        assert stored[row["id"]].shape == (len(sentences), embedder.dim)
        assert np.allclose(stored[row["id"]], fresh, atol=2e-3)  # float16 storage

        warm = r.search("How does Milvus flush data?", k=5)

        def no_passages(*a, **k):
            raise AssertionError("a query embedded passages although the KB stores their vectors")

        monkeypatch.setattr(embedder, "embed_passages", no_passages)
        again = r.search("How does Milvus flush data?", k=5)
        assert [h.chunk_id for h in again] == [h.chunk_id for h in warm]


def test_a_kb_without_stored_sentence_vectors_embeds_them_at_query_time(kb, embedder, monkeypatch):
    """A KB made before sentence vectors were stored (schema 1) still gets the sentence re-score."""
    with Retriever(kb, "t", embedder=embedder) as r:
        stored_order = [h.chunk_id for h in r.search("Which index types does Milvus support?", k=5)]
        monkeypatch.setattr(r.index, "has_sentences", False)
        calls = []
        real = embedder.embed_passages
        monkeypatch.setattr(embedder, "embed_passages", lambda texts, **k: calls.append(len(texts)) or real(texts, **k))
        r._sentence_cache.clear()
        order = [h.chunk_id for h in r.search("Which index types does Milvus support?", k=5)]
    assert calls and sum(calls) > 0
    assert order[0] == stored_order[0]  # the same vectors up to float16: the same best hit


def test_sentence_vectors_off_at_ingest_falls_back_to_query_time(tmp_path, shared_dir, embedder):
    """`[chunk] sentence_vectors = false` keeps ingest to one vector per chunk; the re-score then
    embeds the candidates' sentences per query and still ranks."""
    home = tmp_path / "home"
    home.mkdir()
    corpus = tmp_path / "c"
    corpus.mkdir()
    src = shared_dir / "corpora" / "milvus-docs" / "en" / "faq" / "performance_faq.md"
    (corpus / "performance_faq.md").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    settings = settings_for(home, chunk={"sentence_vectors": False})
    ingest_mod.ingest(settings, [corpus], kb="lean", embedder=embedder)
    with Retriever(settings, "lean", embedder=embedder) as r:
        ids = [row["id"] for row in r.index.all_chunks(("id",))]
        assert ids and r.index.sentence_vectors(ids) == {}
        hits = r.search("Why is my search slow on a small dataset?", k=3)
        assert hits and hits[0].source == "performance_faq.md"
        assert r._sentence_cache  # the query-time path ran


def test_packed_vectors_round_trip_and_damage_is_ignored():
    import numpy as np

    from localrag.kb.index import pack_vectors, unpack_vectors

    m = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    back = unpack_vectors(pack_vectors(m), 8)
    assert back.shape == (3, 8) and np.allclose(back, m, atol=1e-3)
    assert pack_vectors(np.zeros((0, 8))) == "" and unpack_vectors("", 8) is None
    assert unpack_vectors("not base64!", 8) is None
    assert unpack_vectors(pack_vectors(m), 5) is None  # wrong dimension: refused, not misread


def test_file_type_aliases():
    from localrag.kb.retrieve import canonical_filetypes

    assert canonical_filetypes(["md", "markdown", ".TXT", "htm", "html", "pdf", "docx"]) == [
        "markdown",
        "text",
        "html",
        "pdf",
        "docx",
    ]


def test_search_type_md_finds_markdown(kb, embedder):
    with Retriever(kb, "t", embedder=embedder) as r:
        assert {h.source for h in r.search("milvus", k=10, filetypes=["txt"])} == {"notes.txt"}
        md = r.search("milvus", k=10, filetypes=["md"])
        assert md and all(h.filetype == "markdown" for h in md)


def test_split_sentences():
    from localrag.kb.retrieve import split_sentences

    parts = split_sentences("Milvus 2.4 supports HNSW. See milvus.io for details.\n- ok\nversion 3.14 of the thing is out")
    assert parts == ["Milvus 2.4 supports HNSW.", "See milvus.io for details.", "version 3.14 of the thing is out"]
    assert split_sentences("short") == ["short"]


# --- the optional cross-encoder reranker -----------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_zip(minilm_dir, tmp_path_factory):
    """A real sentence-transformers CrossEncoder built on MiniLM, zipped as a user would carry it.
    No real cross-encoder is available offline, so its scoring head is random: these tests check
    the plumbing (install, load, pool, order, fallbacks), not relevance."""
    import os
    import zipfile

    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import CrossEncoder

    base = tmp_path_factory.mktemp("cross-encoder")
    model_dir = base / "ms-marco-MiniLM-L6-v2"
    CrossEncoder(str(minilm_dir), num_labels=1, local_files_only=True).save(str(model_dir))
    zpath = base / "reranker.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(model_dir.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(base))
    return zpath


@pytest.fixture
def rr_home(kb_home, tmp_path, monkeypatch):
    """A copy of the module's KB with its own model store: the other tests here search without a reranker."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(kb_home, home)
    monkeypatch.setenv("LOCALRAG_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _cli(*args):
    from typer.testing import CliRunner

    from localrag.cli.app import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


QUESTION = "How does Milvus flush data?"


def test_an_imported_reranker_reorders_the_fused_pool(rr_home, cross_encoder_zip, embedder):
    from localrag.kb.retrieve import Reranker

    code, out = _cli("models", "import", str(cross_encoder_zip), "--as", "ms-marco-minilm-l6-v2")
    assert code == 0, out
    assert "imported reranker ms-marco-minilm-l6-v2" in out
    code, out = _cli("models", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)["rerankers"]}
    assert rows["ms-marco-minilm-l6-v2"]["installed"] and rows["ms-marco-minilm-l6-v2"]["in_use"]
    assert rows["ms-marco-minilm-l6-v2"]["source"] == "store" and not rows["bge-reranker-v2-m3"]["installed"]

    # the hybrid-only top 5, to compare with
    off = settings_for(rr_home, retrieval={"rerank": False, "window_tokens": 0})
    with Retriever(off, "t", embedder=embedder) as r:
        assert r.reranker is None
        fused = r.search(QUESTION, k=5)
    assert fused and all(h.rerank_score is None for h in fused)

    # a pool of exactly k: the same five chunks, in the cross-encoder's order
    pool5 = settings_for(rr_home, retrieval={"rerank_pool": 5, "window_tokens": 0})
    with Retriever(pool5, "t", embedder=embedder) as r:
        assert isinstance(r.reranker, Reranker) and r.reranker.id == "ms-marco-minilm-l6-v2"
        seen = []
        real = r.reranker.predict

        def spy(pairs):
            scores = real(pairs)
            seen.append((list(pairs), [float(s) for s in scores]))
            return scores

        r.reranker.predict = spy
        hits = r.search(QUESTION, k=5)
        assert r.last_timings.rerank > 0
    (pairs, scores), = seen
    assert len(pairs) == 5 and all(q == QUESTION for q, _ in pairs)
    assert {h.chunk_id for h in hits} == {h.chunk_id for h in fused}
    reranked = [h.rerank_score for h in hits]
    assert None not in reranked and reranked == sorted(reranked, reverse=True)
    assert sorted(reranked, reverse=True) == pytest.approx(sorted(scores, reverse=True))
    assert all(h.score == h.rerank_score for h in hits)
    # raw logits, as answer.RERANK_GATE expects, where the model's own config would apply a sigmoid
    import math

    from sentence_transformers import CrossEncoder

    from localrag.models.resolve import resolve_reranker
    from localrag.models.catalogue import load_catalogue

    path = resolve_reranker(pool5, load_catalogue(pool5.catalogue_path), "ms-marco")
    as_configured = CrossEncoder(str(path), local_files_only=True).predict(pairs)
    assert [1 / (1 + math.exp(-s)) for s in scores] == pytest.approx([float(p) for p in as_configured], abs=1e-4)

    # the default settings: windows and a pool of 20 -- the order still follows the reranker
    with Retriever(settings_for(rr_home), "t", embedder=embedder) as r:
        hits = r.search(QUESTION, k=5)
    scored = [h.rerank_score for h in hits if h.rerank_score is not None]
    assert scored and scored == sorted(scored, reverse=True)


def test_a_broken_reranker_warns_and_search_goes_on(rr_home, cross_encoder_zip, embedder, capsys):
    from localrag.models.resolve import resolve_reranker
    from localrag.models.catalogue import load_catalogue

    code, out = _cli("models", "import", str(cross_encoder_zip), "--as", "ms-marco-minilm-l6-v2")
    assert code == 0, out
    settings = settings_for(rr_home)
    path = resolve_reranker(settings, load_catalogue(settings.catalogue_path), "ms-marco-minilm-l6-v2")
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    capsys.readouterr()
    with Retriever(settings, "t", embedder=embedder) as r:
        assert r.reranker is None
        hits = r.search(QUESTION, k=3)
    assert hits and all(h.rerank_score is None for h in hits)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("warning: cannot load reranker ms-marco-minilm-l6-v2 from ")
    assert "searching without it" in lines[0]


def test_a_configured_reranker_that_is_not_installed_warns(rr_home, embedder, capsys):
    settings = settings_for(rr_home, retrieval={"reranker": "bge-reranker-v2-m3"})
    with Retriever(settings, "t", embedder=embedder) as r:
        assert r.reranker is None and r.search(QUESTION, k=1)
    assert "reranker bge-reranker-v2-m3 is not installed" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(UserError, match="unknown reranker"):
        Retriever(settings_for(rr_home, retrieval={"reranker": "bge-rerank"}), "t", embedder=embedder)
