"""End to end: a folder mixing every format goes into a real Milvus Lite KB; every readable file
is indexed, every unreadable one named with a reason, and a fact from each format comes back
from search with the provenance a citation needs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from localrag.kb import ingest as ingest_mod
from localrag.kb.retrieve import Retriever
from tests.kb_helpers import embedder, install_minilm, minilm_dir, run_cli, settings_for  # noqa: F401

DATA = Path(__file__).resolve().parent / "data" / "formats"

# query -> (source, page, heading prefix, filetype) of a hit that must be among the first five
FACTS = {
    "When is the Falcon launch date?": ("falcon-deck.pptx", 1, "Project Falcon kickoff", "pptx"),
    "What is the hangar code?": ("falcon-deck.pptx", 1, "Project Falcon kickoff", "pptx"),
    "Kestrel Metals titanium sheet lead time": ("suppliers.xlsx", None, "Suppliers > rows 2–", "xlsx"),
    "Oslo North Depot pallets of spares": ("warehouses.csv", None, "rows 2–3", "csv"),
    "Which supplier ships without heat-treatment certificates?": ("audit.eml", None, "Falcon supplier audit results > From: Ines Duarte", "eml"),
    "What is the special at the cafeteria on Thursday?": ("team.mbox", None, "Cafeteria menu > From: user1@falcon.example", "mbox"),
    "When does the lighthouse keeper of Vardø light the lamp?": ("two-towns.epub", None, "Chapter 1. The Harbour", "epub"),
    "How often are Falcon engines inspected?": ("maintenance.odt", None, "Maintenance policy", "odt"),
    "Is hearing protection mandatory in the hangar?": ("briefing.odp", 1, "Safety briefing", "odp"),
    "Falcon fuel pump stock": ("inventory.ods", None, "库存 > rows 2–3", "ods"),
    "telemetry endpoint address": ("config.json", None, "falcon", "json"),  # a small file: one chunk
    "test stand pressure alarm": ("events.jsonl", None, "line 1 > evt-1", "jsonl"),
    "How do I restart the telemetry relay?": ("runbook.rst", None, "Falcon runbook", "rst"),
    "Where do the spare gaskets come from?": ("todo.org", None, "Falcon tasks", "org"),
    "Falcon stall speed at reference mass": ("flight_envelope.py", None, "def stall_speed > lines 9–15", "code"),
    "When is the Falcon acceptance review on the whiteboard?": ("whiteboard.png", 1, "", "image+ocr"),
    "A named pipe is a file that acts like a pipe": ("audit.eml › pipes.pdf", 1, "", "pdf"),
    "named pipe FIFO acts like a pipe": ("mixed-debian-en.pdf", 2, "", "pdf+ocr"),
    "猎鹰项目测试集群迁移到哪里": ("team.mbox", None, "周会纪要", "mbox"),
    "山城缆车几点开始运行": ("two-towns.epub", None, "第二章 山城", "epub"),
    "蓝鲸精密 陀螺仪外壳": ("suppliers.xlsx", None, "供应商 > row 2", "xlsx"),
    "召回率目标 HNSW": ("falcon-deck.pptx", 3, "向量检索方案", "pptx"),
}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    for path in (DATA / "generated").iterdir():
        if not path.name.startswith("scan-"):  # its OCR is tested in test_formats; keep this quick
            shutil.copy(path, root / path.name)
    for name in ("act-props.pptm", "python-msg_04.eml", "chinese_spreadsheet.ods"):
        shutil.copy(DATA / "real" / name, root / name)
    (root / "old-report.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    (root / "salaries.xlsx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptionInfo".encode("utf-16-le"))
    (root / "broken.epub").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    return root


@pytest.mark.slow
def test_mixed_folder_ingest_and_search_with_provenance(home, mixed_folder, embedder, minilm_dir):
    settings = settings_for(home)
    report = ingest_mod.ingest(settings, [mixed_folder], kb="mix", embedder=embedder)
    by = {o.source: o for o in report.outcomes}
    skipped = {s: o.reason for s, o in by.items() if o.status == "skipped"}
    assert set(skipped) == {"old-report.doc", "salaries.xlsx", "broken.epub"}, skipped
    assert "save it as .docx" in skipped["old-report.doc"]
    assert "password-protected XLSX" in skipped["salaries.xlsx"]
    assert "EPUB" in skipped["broken.epub"]
    readable = {p.name for p in mixed_folder.iterdir()} - set(skipped)
    assert {s for s, o in by.items() if o.status == "added"} == readable
    assert report.unread_pages == 0

    with Retriever(settings, "mix", embedder=embedder) as r:
        misses = {}
        for query, (source, page, heading, filetype) in FACTS.items():
            hits = r.search(query, k=5)
            found = [h for h in hits if h.source == source and h.page == page and h.heading.startswith(heading) and h.filetype == filetype]
            if not found:
                misses[query] = [(h.source, h.page, h.heading[:60], h.filetype) for h in hits]
        assert not misses, json.dumps(misses, ensure_ascii=False)
        # --type pdf still finds OCR'd PDF pages
        hits = r.search("named pipe FIFO acts like a pipe", k=5, filetypes=["pdf"])
        assert any(h.filetype == "pdf+ocr" and h.source == "mixed-debian-en.pdf" for h in hits)

    # the CLI's JSON carries the same provenance
    install_minilm(home, minilm_dir)
    out = run_cli(["search", "When is the Falcon launch date?", "--kb", "mix", "--json", "-k", "3"], home)
    assert out.returncode == 0, out.stderr
    top = json.loads(out.stdout)[0]
    assert (top["source"], top["page"], top["heading"], top["filetype"]) == ("falcon-deck.pptx", 1, "Project Falcon kickoff", "pptx")


def test_ingest_summary_names_the_ocr_extra(home, tmp_path, embedder, monkeypatch):
    from localrag.kb.formats import ocr

    monkeypatch.setattr(ocr, "available", lambda: False)
    for name in ("scan-debian-zh.pdf", "mixed-debian-en.pdf", "whiteboard.png", "config.json"):
        shutil.copy(DATA / "generated" / name, tmp_path / name)
    report = ingest_mod.ingest(settings_for(home), [tmp_path], kb="noocr", embedder=embedder)
    by = {o.source: o for o in report.outcomes}
    assert report.unread_pages == 3  # one scanned page in each PDF, and the image
    assert by["mixed-debian-en.pdf"].status == "added"  # its page with a text layer
    assert by["scan-debian-zh.pdf"].status == "skipped" and "install localrag[ocr]" in by["scan-debian-zh.pdf"].reason
    assert by["whiteboard.png"].status == "skipped" and "install localrag[ocr]" in by["whiteboard.png"].reason
