"""Writes the generated files of tests/data/formats/generated/ (see LICENSES.md); run once by hand.

    python tests/data/formats/make_generated.py

Needs python-pptx, openpyxl, odfpy, pypdfium2, pypdf, Pillow and a CJK font (Debian's
fonts-wqy-microhei). The files are committed; tests never run this. Each file carries one
English fact and one Chinese fact that tests/test_formats.py searches for.
"""

from __future__ import annotations

import io
import json
import mailbox
import zipfile
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "generated"
SHARED = HERE.parents[3] / "shared"
FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"


# sections of a realistic length: the chunker merges sections under ~64 tokens with their neighbours
FILLER_EN = (
    "<p>The harbour froze twice that decade, and each time the fishing boats waited in the outer basin "
    "until the icebreaker from Kirkenes cut a channel. Nobody in town remembers a winter without the lamp.</p>"
)
FILLER_ZH = "<p>山城依江而建，街道高低起伏，居民习惯步行上下坡。雾季从十月持续到次年三月，渡轮常因大雾停航，缆车因此成为两岸之间最可靠的交通方式。</p>"
FILLER_TEXT = (
    "This procedure was written after the spring outage, when the relay stayed down for forty minutes "
    "because nobody knew which host held the configuration. Keep this page current when hosts change."
)


def pptx_deck(path: Path) -> None:
    from pptx import Presentation

    prs = Presentation()
    slides = [
        ("Project Falcon kickoff", "The Falcon launch date is 14 March 2027.", "Remind everyone the hangar code is 7781."),
        ("Budget review", "Falcon's travel budget is capped at 18,500 euros.", ""),
        ("向量检索方案", "猎鹰项目使用 HNSW 索引，召回率目标为百分之九十八。", "演讲者备注：演示环境部署在杭州机房。"),
    ]
    for title, body, notes in slides:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    prs.save(path)


def xlsx_book(path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Suppliers"
    ws.append(["Supplier", "Country", "Part", "Lead time (days)"])
    rows = [("Nordwind GmbH", "Germany", "turbine blade", 45), ("Kestrel Metals", "Canada", "titanium sheet", 30)]
    rows += [(f"Vendor {i}", "France", f"bolt type {i}", 10 + i) for i in range(40)]
    for r in rows:
        ws.append(r)
    zh = wb.create_sheet("供应商")
    zh.append(["供应商", "城市", "零件"])
    zh.append(["蓝鲸精密", "苏州", "陀螺仪外壳"])
    wb.save(path)


def csv_file(path: Path) -> None:
    path.write_text("城市,仓库,容量\n成都,西南一号仓,12000 吨\nOslo,North Depot,800 pallets of Falcon spares\n", encoding="utf-8")


def eml_with_attachment(path: Path) -> None:
    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(str(SHARED / "corpora/debian-reference/debian-reference.en.pdf"))
    new = pdfium.PdfDocument.new()
    new.import_pages(src, [41])  # page 42: "A named pipe is a file that acts like a pipe."
    buf = io.BytesIO()
    new.save(buf)
    msg = EmailMessage()
    msg["Subject"] = "Falcon supplier audit results"
    msg["From"] = "Ines Duarte <ines@falcon.example>"
    msg["To"] = "Audit Team <audit@falcon.example>"
    msg["Date"] = "Tue, 02 Feb 2027 09:30:00 +0100"
    msg.set_content("The audit found that Kestrel Metals ships without heat-treatment certificates.\n")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="pdf", filename="pipes.pdf")
    path.write_bytes(bytes(msg))


def zh_mbox(path: Path) -> None:
    box = mailbox.mbox(str(path))
    for i, (subject, body) in enumerate(
        [
            ("周会纪要", "本周决定：猎鹰项目的测试集群迁移到青岛数据中心。"),
            ("Cafeteria menu", "Thursday's special at the Falcon cafeteria is mushroom risotto."),
            ("Re: Badge access", "Your badge now opens building C after 20:00."),
        ]
    ):
        m = EmailMessage()
        m["Subject"], m["From"], m["To"] = subject, f"user{i}@falcon.example", "all@falcon.example"
        m["Date"] = f"Mon, 0{i + 1} Mar 2027 10:00:00 +0800"
        m.set_content(body + "\n")
        box.add(m)
    box.flush()
    box.close()


def epub_book(path: Path) -> None:
    chapters = [
        ("ch1.xhtml", "Chapter 1. The Harbour", "<p>The lighthouse keeper of Vardø lit the lamp at 16:40 every winter evening.</p>" + FILLER_EN),
        ("ch2.xhtml", "第二章 山城", "<p>山城的缆车每天早上六点半开始运行。</p>" + FILLER_ZH),
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/book.opf" media-type="application/oebps-package+xml"/></rootfiles></container>')
        items = "".join(f'<item id="c{i}" href="{h}" media-type="application/xhtml+xml"/>' for i, (h, _t, _b) in enumerate(chapters))
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        zf.writestr("OEBPS/book.opf", f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">falcon-test</dc:identifier><dc:title>Two Towns</dc:title><dc:language>en</dc:language></metadata><manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>{items}</manifest><spine>{spine}</spine></package>')
        links = "".join(f'<li><a href="{h}">{t}</a></li>' for h, t, _b in chapters)
        zf.writestr("OEBPS/nav.xhtml", f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Contents</title></head><body><nav epub:type="toc"><ol>{links}</ol></nav></body></html>')
        for h, t, b in chapters:
            zf.writestr(f"OEBPS/{h}", f'<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>{t}</title></head><body><h1>{t}</h1>{b}</body></html>')


def odf_files(odt: Path, odp: Path, ods: Path) -> None:
    from odf.opendocument import OpenDocumentPresentation, OpenDocumentSpreadsheet, OpenDocumentText
    from odf.table import Table, TableCell, TableRow
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Maintenance policy"))
    doc.text.addElement(P(text="Falcon engines are inspected every 400 flight hours."))
    doc.text.addElement(H(outlinelevel=2, text="维护规定"))
    doc.text.addElement(P(text="发动机滑油每五十小时更换一次。"))
    doc.save(str(odt))

    from odf.draw import Frame, Page, TextBox
    from odf.namespaces import PRESENTATIONNS
    from odf.style import MasterPage, PageLayout

    pres = OpenDocumentPresentation()
    layout = PageLayout(name="PL")
    pres.automaticstyles.addElement(layout)
    master = MasterPage(name="Default", pagelayoutname=layout)
    pres.masterstyles.addElement(master)
    for title, body in [("Safety briefing", "Hearing protection is mandatory in hangar 2."), ("安全简报", "机库三号禁止使用明火。")]:
        page = Page(masterpagename=master)
        pres.presentation.addElement(page)
        for cls, text in (("title", title), ("outline", body)):
            frame = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
            frame.attributes[(PRESENTATIONNS, "class")] = cls
            box = TextBox()
            box.addElement(P(text=text))
            frame.addElement(box)
            page.addElement(frame)
    pres.save(str(odp))

    sheet = OpenDocumentSpreadsheet()
    table = Table(name="库存")
    for row in (["零件", "数量"], ["Falcon fuel pump", "17"], ["燃油滤芯", "230"]):
        tr = TableRow()
        for value in row:
            cell = TableCell()
            cell.addElement(P(text=value))
            tr.addElement(cell)
        table.addElement(tr)
    sheet.spreadsheet.addElement(table)
    sheet.save(str(ods))


def text_files() -> None:
    (OUT / "config.json").write_text(
        json.dumps({"falcon": {"telemetry": {"endpoint": "udp://10.4.0.9:5140", "interval_seconds": 15}, "owner": "飞控组"}}, ensure_ascii=False, indent=2),
        encoding="utf-8",
    )
    (OUT / "events.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in [{"id": "evt-1", "message": "Falcon test stand pressure alarm at 03:12"}, {"id": "evt-2", "message": "二号试验台温度恢复正常"}]) + "\n",
        encoding="utf-8",
    )
    (OUT / "runbook.rst").write_text(
        "Falcon runbook\n==============\n\nRestarting the telemetry relay\n------------------------------\n\nRun ``relayctl restart --graceful`` and wait for the green lamp.\n" + FILLER_TEXT + "\n\n中文说明\n--------\n\n遥测中继重启后需要等待三十秒。\n" + FILLER_TEXT + "\n",
        encoding="utf-8",
    )
    (OUT / "todo.org").write_text(
        "#+TITLE: Falcon tasks\n* TODO Order spare gaskets\nGaskets come from the Tromsø warehouse.\n" + FILLER_TEXT + "\n* 采购\n** 螺栓\n螺栓库存不足五百件时补货。\n" + FILLER_TEXT + "\n",
        encoding="utf-8",
    )
    (OUT / "flight_envelope.py").write_text(
        '"""Flight envelope of the Falcon demonstrator: the limits the autopilot enforces.\n\n' + FILLER_TEXT + '\n"""\n\nMAX_ALTITUDE_M = 4200\n\n\ndef stall_speed(mass_kg: float) -> float:\n    """Falcon stalls below 31 m/s at its 600 kg reference mass.\n\n    The stall speed scales with the square root of the mass: a heavier aircraft needs more lift,\n    hence more speed, before the wing carries it. Flap settings are not modelled here.\n    """\n    return 31.0 * (mass_kg / 600) ** 0.5\n\n\nclass Envelope:\n    def ceiling(self) -> int:\n        # 最大飞行高度为四千二百米\n        return MAX_ALTITUDE_M\n',
        encoding="utf-8",
    )


def images() -> None:
    """A Chinese+English image, and scans: image-only PDFs of real pages of the Debian Reference."""
    import pypdf
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (1400, 260), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 44)
    draw.text((40, 40), "白板照片：猎鹰项目验收会议定在五月十二日。", fill=0, font=font)
    draw.text((40, 140), "Whiteboard: Falcon acceptance review on 12 May.", fill=0, font=font)
    img.save(OUT / "whiteboard.png", optimize=True)

    def scan(pdf: Path, index: int) -> bytes:
        page = pdfium.PdfDocument(str(pdf))[index]
        pil = page.render(scale=150 / 72, grayscale=True).to_pil()
        pil = pil.crop((0, 0, pil.width, int(pil.height * 0.4)))  # the top of the page: OCR in tests stays quick
        buf = io.BytesIO()
        pil.save(buf, "PDF", resolution=150, quality=60)
        return buf.getvalue()

    (OUT / "scan-debian-zh.pdf").write_bytes(scan(SHARED / "corpora/debian-reference/debian-reference.zh-cn.pdf", 43))
    # a PDF whose first page has a text layer and whose second is a scan: only page 2 is OCR'd
    src = pdfium.PdfDocument(str(SHARED / "corpora/debian-reference/debian-reference.en.pdf"))
    text_only = pdfium.PdfDocument.new()
    text_only.import_pages(src, [40])
    buf = io.BytesIO()
    text_only.save(buf)
    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(io.BytesIO(buf.getvalue())))
    writer.append(pypdf.PdfReader(io.BytesIO(scan(SHARED / "corpora/debian-reference/debian-reference.en.pdf", 41))))
    out = io.BytesIO()
    writer.write(out)
    (OUT / "mixed-debian-en.pdf").write_bytes(out.getvalue())


def main() -> None:
    OUT.mkdir(exist_ok=True)
    pptx_deck(OUT / "falcon-deck.pptx")
    xlsx_book(OUT / "suppliers.xlsx")
    csv_file(OUT / "warehouses.csv")
    eml_with_attachment(OUT / "audit.eml")
    (OUT / "team.mbox").unlink(missing_ok=True)
    zh_mbox(OUT / "team.mbox")
    epub_book(OUT / "two-towns.epub")
    odf_files(OUT / "maintenance.odt", OUT / "briefing.odp", OUT / "inventory.ods")
    text_files()
    images()


if __name__ == "__main__":
    main()
