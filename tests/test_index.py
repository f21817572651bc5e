"""The Milvus KB itself: schema, BM25 with jieba, filters, manifest, locking, server mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from localrag.errors import LocalragError as UserError
from localrag.kb.index import ChunkRow, FileRecord, Index, chunk_id, file_id, list_kbs, remove_kb
from tests.kb_helpers import PYTHON, REPO, embedder, free_port, minilm_dir, settings_for, wait_port  # noqa: F401

TEXTS = {
    "/docs/a.md": ["Milvus stores vectors in object storage such as MinIO.", "etcd keeps the metadata of every Milvus module."],
    "/docs/b.md": ["The quick brown fox jumps over the lazy dog.", "HNSW is a graph index for approximate nearest neighbours."],
    "/docs/zh/c.md": ["Milvus 是一个开源的向量数据库，专为嵌入相似性搜索而设计。", "索引是提高向量检索速度的数据结构。"],
}


def _fill(index: Index, embedder) -> None:
    rows, records = [], []
    for path, texts in TEXTS.items():
        vecs = embedder.embed_passages(texts)
        for i, (t, v) in enumerate(zip(texts, vecs)):
            rows.append(
                ChunkRow(chunk_id(path, "h", i), file_id(path), path, path.removeprefix("/docs/"), "markdown", -1, "", i, 0, len(t), "h", t, v)
            )
        records.append(FileRecord(path, path.removeprefix("/docs/"), "/docs", "h", len(texts), 1, 1, "markdown"))
    index.put_chunks(rows)
    index.put_files(records)


def test_create_search_filter_and_reopen(home, embedder):
    settings = settings_for(home)
    with Index.open(settings, "t", create=True) as index:
        assert index.record is None
        index.initialise(embedder.id, embedder.dim)
        _fill(index, embedder)
        assert index.chunk_count() == 6

        hits = index.search_dense(embedder.embed_query("where is metadata kept?"), 3)
        assert hits[0][2]["source"] == "a.md" and "etcd" in hits[0][2]["text"]
        sparse = index.search_sparse("graph index HNSW", 3)
        assert sparse[0][2]["text"].startswith("HNSW") and sparse[0][1] > 0
        # jieba segments Chinese, so a Chinese keyword query matches by BM25
        zh = index.search_sparse("向量数据库", 3)
        assert zh and zh[0][2]["source"] == "zh/c.md"
        # a filter that keeps one chunk of six still returns it (FLAT index, no graph dead ends)
        only = index.search_dense(embedder.embed_query("fox"), 5, f"file_id in [{file_id('/docs/a.md')}]")
        assert {h[2]["source"] for h in only} == {"a.md"} and len(only) == 2
        assert index.search_sparse("fox", 5, 'filetype in ["pdf"]') == []

    with Index.open(settings, "t") as index:  # persisted: record, manifest and chunks
        assert index.record.embedder == embedder.id and index.record.dim == embedder.dim
        assert set(index.files()) == set(TEXTS)
        assert index.chunk_count() == 6
        rec = index.files()["/docs/a.md"]
        index.delete_file_versions(rec)
        index.drop_files([rec.path])
        assert index.chunk_count() == 4 and "/docs/a.md" not in index.files()
    assert list_kbs(settings) == ["t"]
    remove_kb(settings, "t")
    assert list_kbs(settings) == []


def test_missing_and_invalid_names(home):
    settings = settings_for(home)
    with pytest.raises(UserError, match="does not exist"):
        Index.open(settings, "nope")
    with pytest.raises(UserError, match="invalid knowledge base name"):
        Index.open(settings, "../etc")
    with pytest.raises(UserError, match="does not exist"):
        remove_kb(settings, "nope")


def test_second_process_gets_a_clear_in_use_error(home, embedder):
    settings = settings_for(home)
    with Index.open(settings, "busy", create=True) as index:
        index.initialise(embedder.id, embedder.dim)
    holder = subprocess.Popen(
        [
            PYTHON,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from localrag.settings import load_settings
                from localrag.kb.index import Index
                idx = Index.open(load_settings(home={str(home)!r}), "busy")
                print("open", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(UserError) as info:
            Index.open(settings, "busy")
        assert "in use by another localrag process" in info.value.message
        assert f"pid {holder.pid}" in info.value.message
        with pytest.raises(UserError, match="in use"):
            remove_kb(settings, "busy")
    finally:
        holder.communicate("\n", timeout=30)
    with Index.open(settings, "busy") as index:  # released when the holder exits
        assert index.record is not None


def test_server_uri_path_against_real_grpc_endpoint(tmp_path, home, embedder):
    """--milvus-uri: the same code against a Milvus gRPC server (Milvus Lite serving on loopback)."""
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(PYTHON), "milvus-lite"), "server", "--data-dir", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        settings = settings_for(home, milvus_uri=f"http://127.0.0.1:{port}")
        with Index.open(settings, "my-docs", create=True) as index:
            index.initialise(embedder.id, embedder.dim)
            _fill(index, embedder)
        assert list_kbs(settings) == ["my-docs"]
        with Index.open(settings, "my-docs") as index:
            assert index.chunk_count() == 6
            assert index.search_sparse("etcd metadata", 1)[0][2]["source"] == "a.md"
            assert index.size_on_disk() is None
        remove_kb(settings, "my-docs")
        assert list_kbs(settings) == []
        with pytest.raises(UserError, match="does not exist"):
            Index.open(settings, "my-docs")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_unreachable_server_is_a_user_error(home):
    settings = settings_for(home, milvus_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UserError, match="cannot connect to Milvus"):
        Index.open(settings, "x")
