"""Fixtures and helpers shared by the knowledge-base tests (index, ingest, retrieve, eval)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from localrag.runtime.embedder import Embedder, EmbedderInfo

MINILM = "all-minilm-l6-v2"
REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture(scope="session")
def minilm_dir(minilm_zip, tmp_path_factory) -> Path:
    """The starter embedder unzipped once per test session."""
    out = tmp_path_factory.mktemp("minilm") / "model"
    with zipfile.ZipFile(minilm_zip) as zf:
        zf.extractall(out)
    return out


@pytest.fixture(scope="session")
def embedder(minilm_dir) -> Embedder:
    """The real starter embedder, loaded once; passages it has embedded before are remembered
    (the model is deterministic), so tests that ingest the same files don't pay twice."""
    import numpy as np

    os.environ["HF_HUB_OFFLINE"] = "1"
    emb = Embedder.load(minilm_dir, EmbedderInfo(id=MINILM, max_tokens=256))
    memo: dict[str, object] = {}
    real = emb.embed_passages

    def embed_passages(texts, progress=None):
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, real(missing)))
        if progress:
            progress(len(texts))
        return np.stack([memo[t] for t in texts]) if texts else np.zeros((0, emb.dim), dtype=np.float32)

    emb.embed_passages = embed_passages
    return emb


def install_minilm(home: Path, minilm_dir: Path) -> None:
    """Put the unzipped embedder where the model store looks, so CLI runs skip extraction."""
    from localrag.models import store as modelstore
    from localrag.settings import load_settings

    target = modelstore.embedder_dir(load_settings(home=home), MINILM)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copytree(minilm_dir, target, copy_function=os.link if _same_fs(minilm_dir, target.parent) else shutil.copy2)


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def settings_for(home: Path, **overrides):
    from localrag.settings import load_settings

    return load_settings(home=home, **overrides)


def small_corpus(shared_dir: Path, dest: Path) -> Path:
    """A few real milvus-docs pages, English and Chinese, plus files ingest must skip."""
    en = shared_dir / "corpora" / "milvus-docs" / "en"
    zh = shared_dir / "corpora" / "milvus-docs" / "zh-CN"
    (dest / "en").mkdir(parents=True)
    (dest / "zh").mkdir()
    for rel in ("faq/product_faq.md", "faq/performance_faq.md", "rerankers/rerankers-bge.md"):
        shutil.copy(en / rel, dest / "en" / Path(rel).name)
    zh_files = sorted(p for p in zh.rglob("*.md"))[:3]
    for p in zh_files:
        shutil.copy(p, dest / "zh" / p.name)
    return dest


def chunk_snapshot(settings, kb: str) -> dict[str, tuple[str, str]]:
    """chunk id -> (source, text) of every chunk in the KB."""
    from localrag.kb.index import Index

    with Index.open(settings, kb) as index:
        return {r["id"]: (r["source"], r["text"]) for r in index.all_chunks(("id", "source", "text"))}


def run_cli(args: list[str], home: Path, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, LOCALRAG_HOME=str(home), HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run(
        [PYTHON, "-m", "localrag", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def small_kb_home(tmp_path_factory, shared_dir, embedder):
    """One small real KB ("t") per test module: the small corpus plus a text file with a rare
    word (BM25 must find it) and a few identifiers. Tests only read it."""
    from localrag.kb import ingest as ingest_mod

    base = tmp_path_factory.mktemp("small-kb")
    home = base / "home"
    home.mkdir()
    corpus = small_corpus(shared_dir, base / "corpus")
    (corpus / "notes.txt").write_text("Zebra tuning notes: zebras prefer IVF_FLAT with nlist 1024.\n", encoding="utf-8")
    ingest_mod.ingest(settings_for(home), [corpus], kb="t", embedder=embedder)
    return home

