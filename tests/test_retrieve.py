"""Hybrid retrieval over a small real KB: fusion, scores, filters, Chinese, `search --json`."""

from __future__ import annotations

import json

import pytest

from localrag import ingest as ingest_mod
from localrag.console import UserError
from localrag.retrieve import Retriever, glob_match, rrf
from tests.kb_helpers import embedder, install_minilm, minilm_dir, run_cli, settings_for, small_corpus  # noqa: F401


@pytest.fixture(scope="module")
def kb_home(tmp_path_factory, shared_dir, embedder):
    """One small real KB for the whole module: searches only read it."""
    base = tmp_path_factory.mktemp("retrieve")
    home = base / "home"
    home.mkdir()
    corpus = small_corpus(shared_dir, base / "corpus")
    (corpus / "notes.txt").write_text("Zebra tuning notes: zebras prefer IVF_FLAT with nlist 1024.\n", encoding="utf-8")
    ingest_mod.ingest(settings_for(home), [corpus], kb="t", embedder=embedder)
    return home


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
    from localrag.retrieve import merge_window

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

    from localrag.parse import parse_file

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


def test_file_type_aliases():
    from localrag.retrieve import canonical_filetypes

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
    from localrag.retrieve import split_sentences

    parts = split_sentences("Milvus 2.4 supports HNSW. See milvus.io for details.\n- ok\nversion 3.14 of the thing is out")
    assert parts == ["Milvus 2.4 supports HNSW.", "See milvus.io for details.", "version 3.14 of the thing is out"]
    assert split_sentences("short") == ["short"]
