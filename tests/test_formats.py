"""The format readers of localrag/kb/formats/: real files (tests/data/formats/real) and generated
ones with known facts (tests/data/formats/generated, see its LICENSES.md), provenance, OCR, the
files they must refuse with a reason, and big inputs read within memory."""

from __future__ import annotations

import io
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest

from localrag.kb import files as files_mod
from localrag.kb.formats import ocr
from localrag.kb.parse import NeedsOCR, ParseError, parse_file

DATA = Path(__file__).resolve().parent / "data" / "formats"
REAL = DATA / "real"
GEN = DATA / "generated"


def _text(doc) -> str:
    return doc.text + "".join("\n\n" + part.text for _, part in doc.parts)


def _section(doc, needle: str):
    return next(s for s in doc.sections if needle in s.text)


# ---------------------------------------------------------------- slides


def test_pptx_slide_number_title_and_notes():
    doc = parse_file(GEN / "falcon-deck.pptx")
    assert doc.filetype == "pptx"
    s = _section(doc, "14 March 2027")
    assert s.page == 1 and s.heading == ("Project Falcon kickoff",)
    assert "hangar code is 7781" in s.text  # speaker notes
    assert s.text.count("Project Falcon kickoff") == 1  # the title once, not again as a shape
    zh = _section(doc, "召回率")
    assert zh.page == 3 and zh.heading == ("向量检索方案",) and "杭州机房" in zh.text


def test_real_pptx_and_macro_enabled_pptm_are_read_without_running_anything():
    doc = parse_file(REAL / "prs-notes.pptx")
    assert "Notes" in doc.text and doc.sections[0].page == 1
    doc = parse_file(REAL / "ph-populated-placeholders.pptx")
    assert any(s.heading == ("Title Text",) for s in doc.sections)
    with zipfile.ZipFile(REAL / "act-props.pptm") as zf:
        assert "ppt/vbaProject.bin" in zf.namelist()  # a real macro project is in there
    doc = parse_file(REAL / "act-props.pptm")
    assert doc.filetype == "pptx" and [s.page for s in doc.sections] == [1, 2, 3, 4, 5]


def test_odp_pages_like_slides():
    doc = parse_file(GEN / "briefing.odp")
    assert [(s.page, s.heading) for s in doc.sections] == [(1, ("Safety briefing",)), (2, ("安全简报",))]
    assert "hangar 2" in doc.text and "明火" in doc.text
    real = parse_file(REAL / "ol.odp")
    assert real.sections[0].heading == ("OL",) and "Tsvelf" in real.text


# ---------------------------------------------------------------- sheets


def test_xlsx_sheet_heading_row_range_and_header_on_every_block():
    doc = parse_file(GEN / "suppliers.xlsx")
    header = "Supplier | Country | Part | Lead time (days)"
    en = [s for s in doc.sections if s.heading[0] == "Suppliers"]
    assert len(en) > 1 and all(s.text.startswith(header + "\n") for s in en)
    assert en[0].heading == ("Suppliers", f"rows 2–{en[0].heading[1].split('–')[1]}")
    assert "Kestrel Metals | Canada | titanium sheet | 30" in en[0].text
    last = int(en[-1].heading[1].split("–")[1])
    assert last == 43  # header + 42 rows
    zh = _section(doc, "蓝鲸精密")
    assert zh.heading == ("供应商", "row 2") and zh.text.startswith("供应商 | 城市 | 零件")


def test_csv_tsv_and_ods(tmp_path):
    doc = parse_file(GEN / "warehouses.csv")
    assert doc.sections[0].heading == ("rows 2–3",) and doc.sections[0].text.startswith("城市 | 仓库 | 容量")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("name\tnote\nalpha\t\"quoted, with comma\"\n", encoding="utf-8")
    assert "alpha | quoted, with comma" in parse_file(tsv).text
    ods = parse_file(GEN / "inventory.ods")
    assert ods.sections[0].heading == ("库存", "rows 2–3") and "Falcon fuel pump | 17" in ods.text
    real = parse_file(REAL / "chinese_spreadsheet.ods")
    assert real.sections[0].heading[0] == "工作表1"


def test_big_sheet_streams(tmp_path):
    from openpyxl import Workbook

    path = tmp_path / "big.xlsx"
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Log")
    ws.append(["id", "sensor", "reading"])
    for i in range(50_000):
        ws.append([i, f"s{i % 97}", i * 0.5])
    wb.save(path)
    t0 = time.perf_counter()
    doc = parse_file(path)
    elapsed = time.perf_counter() - t0
    assert doc.sections[-1].heading == ("Log", doc.sections[-1].heading[1]) and doc.sections[-1].heading[1].endswith("–50001")
    assert all(s.text.startswith("id | sensor | reading\n") for s in doc.sections)
    assert "49999 | s44 | 24999.5" in doc.sections[-1].text
    assert elapsed < 60, elapsed


# ---------------------------------------------------------------- mail


def test_eml_heading_context_and_pdf_attachment_as_its_own_document():
    doc = parse_file(GEN / "audit.eml")
    s = doc.sections[0]
    assert s.heading[0] == "Falcon supplier audit results"
    assert "From: Ines Duarte <ines@falcon.example>" in s.heading[1] and "To: Audit Team" in s.heading[1]
    assert "Date: 2027-02-02 09:30 +0100" in s.heading[1]
    [(name, pdf)] = doc.parts
    assert name == "pipes.pdf" and pdf.filetype == "pdf"
    assert "A named pipe is a file that acts like a pipe." in pdf.text and pdf.sections[0].page == 1


def test_real_eml_and_mbox():
    doc = parse_file(REAL / "python-msg_04.eml")
    assert doc.sections[0].heading[0] == "a simple multipart" and [n for n, _ in doc.parts] == ["msg.txt"]
    doc = parse_file(REAL / "python-msg_07.eml")
    assert "dingus fish" in doc.text and any("dingusfish.gif: unsupported" in w for w in doc.warnings)
    doc = parse_file(REAL / "python-msg_43.mbox")
    assert doc.filetype == "mbox" and "BANNED FILENAME ALERT" in doc.text
    team = parse_file(GEN / "team.mbox")
    assert [s.heading[0] for s in team.sections] == ["周会纪要", "Cafeteria menu", "Re: Badge access"]


def test_big_mailbox_streams(tmp_path):
    path = tmp_path / "big.mbox"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(10_000):
            fh.write(
                f"From sender{i}@example.com Mon Mar  1 10:00:00 2027\nFrom: sender{i}@example.com\n"
                f"To: team@example.com\nSubject: status {i}\nDate: Mon, 01 Mar 2027 10:00:00 +0000\n\n"
                f"Build {i} passed all {i % 50} checks.\n\n"
            )
    doc = parse_file(path)
    assert len(doc.sections) == 10_000 and doc.sections[-1].heading[0] == "status 9999"
    assert "Build 9999 passed all 49 checks." in doc.sections[-1].text


# ---------------------------------------------------------------- e-books, OpenDocument text


def test_epub_chapter_titles():
    doc = parse_file(GEN / "two-towns.epub")
    assert _section(doc, "16:40").heading[0] == "Chapter 1. The Harbour"
    assert _section(doc, "缆车").heading[0] == "第二章 山城"
    real = parse_file(REAL / "live-manual.en.epub")
    assert len(real.sections) > 100 and "live-build" in real.text
    assert any(s.heading and s.heading[0] != "Table of Contents" for s in real.sections)


def test_odt_headings():
    doc = parse_file(GEN / "maintenance.odt")
    assert _section(doc, "400 flight hours").heading == ("Maintenance policy",)
    assert _section(doc, "五十小时").heading == ("Maintenance policy", "维护规定")
    assert "Cell 1 | Cell 2" in parse_file(REAL / "simpletable.odt").text
    assert "burning deck" in parse_file(REAL / "serious_poem.odt").text


# ---------------------------------------------------------------- structured text


def test_json_key_paths(shared_dir):
    doc = parse_file(GEN / "config.json")
    assert _section(doc, "udp://10.4.0.9:5140").heading == ("falcon", "telemetry")
    jl = parse_file(GEN / "events.jsonl")
    assert _section(jl, "二号试验台").heading == ("line 2", "evt-2")
    menu = parse_file(shared_dir / "corpora/milvus-docs/en/menuStructure/en.json")
    assert _section(menu, "id: overview.md").heading == ("About Milvus", "What is Milvus")


def test_rst_org_and_code_headings():
    rst = parse_file(GEN / "runbook.rst")
    assert _section(rst, "relayctl").heading == ("Falcon runbook", "Restarting the telemetry relay")
    assert _section(rst, "三十秒").heading == ("Falcon runbook", "中文说明")
    org = parse_file(GEN / "todo.org")
    assert _section(org, "Tromsø").heading == ("Falcon tasks", "Order spare gaskets")
    assert _section(org, "五百件").heading == ("Falcon tasks", "采购", "螺栓")
    code = parse_file(GEN / "flight_envelope.py")
    assert _section(code, "31 m/s").heading == ("def stall_speed", "lines 9–15")
    assert _section(code, "四千二百米").heading == ("class Envelope", "def ceiling", "lines 19–21")


# ---------------------------------------------------------------- OCR


def test_ocr_models_ship_in_the_wheel_and_start_offline(monkeypatch):
    import rapidocr

    models = list((Path(rapidocr.__file__).parent / "models").glob("*.onnx"))
    assert len(models) >= 2, models

    def no_network(*a, **k):
        raise AssertionError("OCR tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(ocr, "_engine", None)
    assert "Falcon" in parse_file(GEN / "whiteboard.png").text


@pytest.mark.slow
def test_ocr_reads_scans_and_images_chinese_and_english():
    img = parse_file(GEN / "whiteboard.png")
    assert img.filetype == "image" and img.ocr_pages == {1}
    assert "猎鹰项目验收会议" in img.text and "acceptance review" in img.text
    mixed = parse_file(GEN / "mixed-debian-en.pdf")
    assert mixed.ocr_pages == {2}  # page 1 has a text layer: not OCR'd
    assert "A named pipe is a file that acts like a pipe." in _section(mixed, "named pipe").text
    zh = parse_file(GEN / "scan-debian-zh.pdf")
    assert zh.ocr_pages == {1} and "文件管理" in zh.text
    assert "TRUTH" in parse_file(REAL / "monty-truth.png").text


def test_without_ocr_scans_are_counted_and_named(monkeypatch):
    monkeypatch.setattr(ocr, "available", lambda: False)
    mixed = parse_file(GEN / "mixed-debian-en.pdf")
    assert mixed.unread_pages == 1 and not mixed.ocr_pages and [s.page for s in mixed.sections] == [1]
    with pytest.raises(NeedsOCR, match=r"install localrag\[ocr\]") as exc:
        parse_file(GEN / "scan-debian-zh.pdf")
    assert exc.value.pages == 1
    with pytest.raises(NeedsOCR, match=r"install localrag\[ocr\]"):
        parse_file(GEN / "whiteboard.png")


# ---------------------------------------------------------------- refused with a reason


def _discover_one(path: Path):
    [item] = list(files_mod.discover([path]))
    return item


def test_legacy_encrypted_and_macro_files(tmp_path):
    for ext, fix in ((".doc", ".docx"), (".ppt", ".pptx"), (".xls", ".xlsx")):
        p = tmp_path / f"old{ext}"
        p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
        item = _discover_one(p)
        assert isinstance(item, files_mod.Skipped) and f"save it as {fix}" in item.reason
    # an encrypted OOXML file is an OLE2 container with an EncryptionInfo stream
    enc = tmp_path / "secret.xlsx"
    enc.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptionInfo".encode("utf-16-le") + b"\x00" * 100)
    assert isinstance(_discover_one(enc), files_mod.FileEntry)
    with pytest.raises(ParseError, match="password-protected XLSX"):
        parse_file(enc)
    renamed = tmp_path / "renamed.pptx"
    renamed.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    with pytest.raises(ParseError, match=r"save it as \.pptx"):
        parse_file(renamed)
    broken = tmp_path / "broken.epub"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ParseError, match="EPUB"):
        parse_file(broken)


def test_docm_text_is_read_and_its_macros_are_not(tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("Quarterly macro report", 1)
    d.add_paragraph("The macro-enabled report says revenue grew 7 percent.")
    plain = io.BytesIO()
    d.save(plain)
    path = tmp_path / "report.docm"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(
                    b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                    b"application/vnd.ms-word.document.macroEnabled.main+xml",
                )
            zout.writestr(info, data)
        zout.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0 not to be run")
    doc = parse_file(path)
    assert doc.filetype == "docx" and "revenue grew 7 percent" in doc.text
    assert doc.sections[0].heading == ("Quarterly macro report",)


@pytest.mark.slow
def test_big_deck(tmp_path):
    from pptx import Presentation

    prs = Presentation()
    for i in range(500):
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = f"Slide {i + 1}"
        slide.placeholders[1].text = f"Fact number {i + 1} of the big deck."
    path = tmp_path / "big.pptx"
    prs.save(path)
    doc = parse_file(path)
    assert len(doc.sections) == 500 and doc.sections[-1].page == 500 and doc.sections[-1].heading == ("Slide 500",)


def test_every_data_file_parses(monkeypatch):
    monkeypatch.setattr(ocr, "available", lambda: False)  # OCR has tests of its own; this one stays fast
    for path in sorted(REAL.iterdir()) + sorted(GEN.iterdir()):
        if path.suffix in (".png", ".jpg") or path.name.startswith("scan-"):
            continue
        item = _discover_one(path)
        assert isinstance(item, files_mod.FileEntry), (path, item)
        doc = parse_file(path)
        assert _text(doc).strip(), path
