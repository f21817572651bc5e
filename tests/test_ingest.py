"""Ingest: summary, incremental re-runs, change/delete/rename with prune, kill -9 recovery, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from localrag.kb import ingest as ingest_mod
from localrag.errors import LocalragError as UserError
from localrag.kb.index import Index
from tests.kb_helpers import (  # noqa: F401
    MINILM,
    PYTHON,
    REPO,
    chunk_snapshot,
    embedder,
    install_minilm,
    minilm_dir,
    run_cli,
    settings_for,
    small_corpus,
)

FORMATS = Path(__file__).parent / "data" / "formats" / "generated"


@pytest.fixture
def corpus(tmp_path, shared_dir):
    root = small_corpus(shared_dir, tmp_path / "corpus")
    (root / "empty.md").write_text("", encoding="utf-8")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    return root


def _no_embedder_load(monkeypatch):
    from localrag.runtime import embedder as embed

    def refuse(*a, **k):
        raise AssertionError("the embedder was loaded although nothing needed embedding")

    monkeypatch.setattr(embed, "load_for", refuse)


def test_ingest_then_unchanged_then_change_delete_rename(home, corpus, embedder, monkeypatch):
    settings = settings_for(home)
    seen = []
    report = ingest_mod.ingest(settings, [corpus], kb="t", embedder=embedder, progress=seen.append)
    counts = report.summary()
    assert counts["added"] == 6 and counts["removed"] == 0
    skipped = {o.source: o.reason for o in report.outcomes if o.status == "skipped"}
    assert set(skipped) >= {"empty.md", "broken.pdf"} and all(skipped.values())
    assert seen and seen[-1].phase == "done" and seen[-1].chunks == report.chunks_written > 6
    first = chunk_snapshot(settings, "t")
    assert len(first) == report.chunks_written
    assert {s for s, _ in first.values()} >= {"en/product_faq.md", "zh/" + sorted(os.listdir(corpus / "zh"))[0]}

    # unchanged: nothing is read beyond stat, and the embedder is never loaded
    _no_embedder_load(monkeypatch)
    again = ingest_mod.ingest(settings, [corpus], kb="t")
    assert again.summary()["unchanged"] == 6 and again.chunks_written == 0
    # touched but identical: still unchanged (content hash), mtime remembered
    os.utime(corpus / "en" / "product_faq.md", ns=(time.time_ns(), time.time_ns()))
    assert ingest_mod.ingest(settings, [corpus], kb="t").summary()["unchanged"] == 6
    monkeypatch.undo()

    # change one file, delete one, rename one; --prune mirrors the folder
    faq = corpus / "en" / "performance_faq.md"
    faq.write_text(faq.read_text(encoding="utf-8") + "\n\n## Zebra tuning\n\nZebras index quickly with IVF_FLAT.\n", encoding="utf-8")
    (corpus / "en" / "rerankers-bge.md").unlink()
    (corpus / "en" / "product_faq.md").rename(corpus / "en" / "faq-renamed.md")
    report = ingest_mod.ingest(settings, [corpus], kb="t", embedder=embedder, prune=True)
    by = {o.source: o.status for o in report.outcomes}
    assert by["en/performance_faq.md"] == "updated"
    assert by["en/faq-renamed.md"] == "added"
    assert by["en/rerankers-bge.md"] == "removed" and by["en/product_faq.md"] == "removed"

    # the result is exactly what a clean build of the current folder gives: no stale, no duplicates
    after = chunk_snapshot(settings, "t")
    ingest_mod.ingest(settings_for(home), [corpus], kb="clean", embedder=embedder)
    clean = chunk_snapshot(settings, "clean")
    assert sorted(after.values()) == sorted(clean.values())
    assert any("Zebras index quickly" in t for _, t in after.values())
    with Index.open(settings, "t") as index:
        files = index.files()
        assert {f.source for f in files.values()} == {s for s, _ in after.values()}
        assert all(f.status == "ok" for f in files.values())


def test_files_read_by_an_older_reader_are_read_again(home, tmp_path, embedder, monkeypatch):
    """A reader that reads its type better (Markdown's HTML blocks) reaches KBs built before it:
    the next ingest reads those files again although they did not change, replacing their chunks
    in place (same content hash, same chunk ids: no duplicates), and then leaves them alone."""
    from localrag.kb import parse

    root = tmp_path / "docs"
    root.mkdir()
    (root / "params.md").write_text(
        "# Params\n\n<table><tr><th>name</th><th>meaning</th></tr><tr><td>nlist</td><td>cluster count</td></tr></table>\n",
        encoding="utf-8",
    )
    (root / "notes.txt").write_text("Plain notes about clusters.\n", encoding="utf-8")
    # a mail's Markdown attachment was read by the older Markdown reader too
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "ops@example.org", "team@example.org", "Index parameters"
    mail.set_content("The parameter table is attached.")
    mail.add_attachment((root / "params.md").read_bytes(), maintype="text", subtype="markdown", filename="table.md")
    (root / "params.eml").write_bytes(bytes(mail))
    settings = settings_for(home)
    monkeypatch.setattr(parse, "_READER_VERSIONS", {})  # the KB is built by the older reading...
    ingest_mod.ingest(settings, [root], kb="r", embedder=embedder)
    with Index.open(settings, "r") as index:
        assert {f.source: f.reader for f in index.files().values()} == {"params.md": 0, "notes.txt": 0, "params.eml": 0}
    monkeypatch.undo()  # ...and read by the current one

    report = ingest_mod.ingest(settings, [root], kb="r", embedder=embedder)
    by = {o.source: o.status for o in report.outcomes}
    assert by == {"params.md": "updated", "notes.txt": "unchanged", "params.eml": "updated"}
    chunks = chunk_snapshot(settings, "r")
    assert [t for s, t in chunks.values() if s == "params.md"] == ["# Params\n\nname | meaning\nnlist | cluster count"]
    attached = [t for s, t in chunks.values() if "table.md" in s]
    assert attached and not any("<td>" in t for t in attached) and any("nlist | cluster count" in t for t in attached)
    with Index.open(settings, "r") as index:
        files = {f.source: f.reader for f in index.files().values()}
    assert files["params.md"] == parse.reader_version("markdown") >= 1
    assert files["params.eml"] == parse.reader_version("eml") >= parse.reader_version("markdown")
    _no_embedder_load(monkeypatch)
    assert ingest_mod.ingest(settings, [root], kb="r").summary()["unchanged"] == 3


def test_a_file_that_no_longer_reads_takes_its_old_chunks_with_it(home, tmp_path, embedder):
    """A file edited down to nothing, or replaced by one that cannot be read, must not go on
    answering questions with what it used to say: its earlier chunks leave the KB, the summary
    says so, and the KB is what a clean build of the folder gives."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "keep.md").write_text("# Keep\n\nThe ferry leaves at nine.\n", encoding="utf-8")
    for name in ("emptied.md", "blank.md"):
        (root / name).write_text(f"# {name}\n\nThe lighthouse is painted red.\n", encoding="utf-8")
    for name in ("report.pdf", "scan.pdf"):
        shutil.copy(FORMATS / "mixed-debian-en.pdf", root / name)
    settings = settings_for(home)
    first = ingest_mod.ingest(settings, [root], kb="g", embedder=embedder)
    assert first.summary()["added"] == 5

    (root / "emptied.md").write_bytes(b"")  # refused before it is read: an empty file
    (root / "blank.md").write_text("\n   \n", encoding="utf-8")  # read, and holds no text
    (root / "report.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")  # read, and fails
    (root / "scan.pdf").write_bytes(b"GIF89a not a pdf at all")  # refused by its first bytes
    report = ingest_mod.ingest(settings, [root], kb="g", embedder=embedder)
    got = {o.source: (o.status, o.reason) for o in report.outcomes}
    assert got["keep.md"][0] == "unchanged"
    for name in ("emptied.md", "blank.md", "report.pdf", "scan.pdf"):
        status, reason = got[name]
        assert status == "skipped" and "its earlier version (" in reason and "taken out of the KB" in reason, reason
    assert got["emptied.md"][1].startswith("empty file") and got["blank.md"][1].startswith("no text")
    after = chunk_snapshot(settings, "g")
    assert {s for s, _ in after.values()} == {"keep.md"}
    with Index.open(settings, "g") as index:
        assert {f.source for f in index.files().values()} == {"keep.md"}
    ingest_mod.ingest(settings, [root], kb="clean", embedder=embedder)
    assert sorted(after.values()) == sorted(chunk_snapshot(settings, "clean").values())

    # still unreadable next time: skipped, with nothing left to take out
    again = {o.source: (o.status, o.reason) for o in ingest_mod.ingest(settings, [root], kb="g").outcomes}
    assert again["report.pdf"][0] == "skipped" and "taken out" not in again["report.pdf"][1]
    # and back once it has text again
    (root / "emptied.md").write_text("# New\n\nThe lighthouse is painted white now.\n", encoding="utf-8")
    back = {o.source: o.status for o in ingest_mod.ingest(settings, [root], kb="g", embedder=embedder).outcomes}
    assert back["emptied.md"] == "added"
    assert any("painted white" in t for _, t in chunk_snapshot(settings, "g").values())


def test_a_file_read_again_for_a_new_reader_keeps_its_reading_if_the_new_one_fails(home, tmp_path, embedder, monkeypatch):
    """The bytes did not change, only the reader: when the newer reader cannot read them (or
    fails for a reason of the moment), the earlier reading of the same bytes stays."""
    from localrag.kb import parse

    root = tmp_path / "docs"
    root.mkdir()
    (root / "notes.md").write_text("# Notes\n\nThe lighthouse is painted red.\n", encoding="utf-8")
    settings = settings_for(home)
    monkeypatch.setattr(parse, "_READER_VERSIONS", {})
    ingest_mod.ingest(settings, [root], kb="k", embedder=embedder)
    before = chunk_snapshot(settings, "k")
    monkeypatch.undo()

    def failing(path, filetype):
        raise parse.ParseError("out of memory while parsing")

    monkeypatch.setattr(parse, "_reader", lambda filetype: failing)
    report = ingest_mod.ingest(settings, [root], kb="k", embedder=embedder)
    (outcome,) = report.outcomes
    assert outcome.status == "skipped" and outcome.reason.endswith("its earlier reading is kept")
    assert chunk_snapshot(settings, "k") == before


def test_embedder_mismatch_is_refused(home, corpus, embedder):
    settings = settings_for(home)
    ingest_mod.ingest(settings, [corpus / "en"], kb="t", embedder=embedder)
    with pytest.raises(UserError, match="was built with embedder 'all-minilm-l6-v2'"):
        ingest_mod.ingest(settings, [corpus / "en"], kb="t", embedder_id="multilingual-e5-small")


def test_missing_path_is_a_usage_error(home):
    with pytest.raises(UserError, match="no such file"):
        ingest_mod.ingest(settings_for(home), [home / "nope"], kb="t")


_SLOW_INGEST = textwrap.dedent(
    """
    import sys, time, zipfile
    from pathlib import Path
    from localrag.settings import load_settings
    from localrag.runtime.embedder import Embedder, EmbedderInfo
    from localrag.kb import ingest
    home, corpus, model = sys.argv[1:4]
    emb = Embedder.load(Path(model), EmbedderInfo("all-minilm-l6-v2", 256))
    orig = emb.embed_passages
    def slow(texts, progress=None):  # give the killer time to strike between batches
        out = orig(texts, progress)
        print("batch", flush=True)
        time.sleep(0.3)
        return out
    emb.embed_passages = slow
    ingest._FLUSH_CHUNKS = 8
    ingest.ingest(load_settings(home=home), [Path(corpus)], kb="k", embedder=emb)
    print("finished", flush=True)
    """
)


def test_killed_mid_ingest_converges_to_a_clean_build(home, tmp_path, corpus, embedder, minilm_dir):
    settings = settings_for(home)
    proc = subprocess.Popen(
        [PYTHON, "-c", _SLOW_INGEST, str(home), str(corpus), str(minilm_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    batches = 0
    for line in proc.stdout:
        batches += line.startswith("batch")
        if batches == 2:
            # strike while the process is writing the next batch's manifest rows and chunks
            time.sleep(0.35)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    partial = chunk_snapshot(settings, "k")

    report = ingest_mod.ingest(settings, [corpus], kb="k", embedder=embedder)
    resumed = chunk_snapshot(settings, "k")
    other = tmp_path / "other-home"
    other.mkdir()
    ingest_mod.ingest(settings_for(other), [corpus], kb="k", embedder=embedder)
    clean = chunk_snapshot(settings_for(other), "k")
    assert resumed == clean  # same chunk ids and texts
    assert len(partial) < len(clean)
    assert report.count("unchanged") >= 1  # work finished before the kill was kept


def test_cli_ingest_sync_list_info_rm_and_exit_codes(home, tmp_path, corpus, minilm_dir):
    install_minilm(home, minilm_dir)
    r = run_cli(["ingest", str(corpus), "--kb", "docs"], home)
    # the catalogue's CPU default is not installed offline: a fallback, said clearly; skips -> 3
    assert r.returncode == 3, r.stderr
    assert "not installed; using 'all-minilm-l6-v2'" in r.stderr.replace("\n", " ")
    assert "6 added" in r.stdout and "2 skipped" in r.stdout and "broken.pdf" in r.stdout

    shutil.rmtree(corpus / "zh")
    (corpus / "empty.md").unlink()
    (corpus / "broken.pdf").unlink()
    r = run_cli(["sync", str(corpus), "--kb", "docs"], home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 removed" in r.stdout and "3 unchanged" in r.stdout

    r = run_cli(["kb", "list", "--json"], home)
    [row] = json.loads(r.stdout)
    assert row["name"] == "docs" and row["files"] == 3 and row["embedder"] == MINILM and row["dimensions"] == 384
    assert row["chunks"] > 3 and row["size_bytes"] > 0
    r = run_cli(["kb", "info", "docs"], home)
    assert r.returncode == 0 and "all-minilm-l6-v2" in r.stdout and "chunks" in r.stdout

    r = run_cli(["kb", "rm", "docs"], home, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--yes" in r.stderr
    r = run_cli(["kb", "rm", "docs", "--yes"], home)
    assert r.returncode == 0
    r = run_cli(["kb", "info", "docs"], home)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_hostile_corpus_never_stops_the_run(home, tmp_path, embedder):
    from tests.hostile import build_hostile_corpus

    root = tmp_path / "hostile"
    root.mkdir()
    expected = build_hostile_corpus(root)
    report = ingest_mod.ingest(settings_for(home), [root], kb="h", embedder=embedder)
    by = {o.source: o for o in report.outcomes}
    for name, exp in expected.items():
        if exp.outcome == "ok":
            assert by[name].status == "added", (name, by[name])
        elif exp.outcome in ("skipped", "parse_error"):
            assert by[name].status == "skipped" and by[name].reason, name
        else:
            assert name not in by, name
    assert all(o.reason for o in report.outcomes if o.status == "skipped")
    from localrag.kb.retrieve import Retriever
    from tests.hostile import DEBIAN_ZH_PHRASE

    with Retriever(settings_for(home), "h", embedder=embedder) as r:  # a Chinese PDF page is findable
        hits = r.search("tmpfs 临时文件系统 虚拟内存", k=3)
        assert hits[0].source == "debian-zh.pdf" and hits[0].page is not None
        assert any(DEBIAN_ZH_PHRASE[:10] in h.text.replace("\n", "") for h in hits)
