"""The web page served by `localrag serve`, driven in a real headless Chromium (Debian's
`chromium` through Playwright) against a real server: real keys, real knowledge bases (Markdown,
a real PDF, a hostile document), the offline starter model answering.

The one stand-in: the starter model does not reason, so the reasoning block is checked with a
recorded R1-style SSE stream fulfilled by page.route (its sources are the real server's, with
real links). Screenshots of the main states go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.kb_helpers import REPO, free_port, wait_port

if os.environ.get("CI"):  # CI installs both (.ci/run): a missing browser there is a failure, not a skip
    import playwright.sync_api as sync_api

    assert Path("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing: .ci/run installs it"
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (see .ci/run)")

CHROMIUM = os.environ.get("LOCALRAG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("LOCALRAG_WEB_SCREENSHOTS", REPO / "tests" / "screenshots"))
HOSTILE = ('# Firewall notes\n\nThe zebra firewall blocks <script>window.__pwned = 1</script> and '
           '<img src=x onerror="window.__pwned = 2"> when they appear in uploads.\n\n'
           'Also <img src="http://203.0.113.9/track.png"> must never be fetched.\n')
HANDBOOK = """# Installing offline

## Air-gapped machines

To install localrag on a machine without network access, copy the wheelhouse folder on a USB stick
and run the install script with the offline flag. The team calls this the blue suitcase procedure.

## Updating

Updates arrive the same way: a new wheelhouse, checked with its SHA-256 list before use.
"""
CHINESE = "# 报销流程\n\n员工出差回来后，应在十五个工作日内提交报销单，并附上发票原件。部门经理审批后，财务部在五个工作日内付款。\n"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")


def _cli(home: Path, *args: str, timeout: float = 300) -> str:
    env = {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "localrag", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _pdf_excerpt(shared_dir: Path, dest: Path) -> None:
    """Four real pages (31-34) of the Debian Reference: page 2 of the excerpt is about shutdown."""
    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(str(shared_dir / "corpora" / "debian-reference" / "debian-reference.en.pdf"))
    out = pdfium.PdfDocument.new()
    out.import_pages(src, [30, 31, 32, 33])
    out.save(str(dest))


INGEST = """
import sys
from localrag.api import LocalRAG
with LocalRAG() as rag:
    for kb, path in (("team", sys.argv[1]), ("hr", sys.argv[2])):
        report = rag.ingest([path], kb=kb, embedder="all-minilm-l6-v2")
        print(kb, report)
"""


class Server:
    def __init__(self, url: str, home: Path, keys: dict[str, str], proc: subprocess.Popen):
        self.url, self.home, self.keys, self.proc = url, home, keys, proc

    def api(self, method: str, path: str, key: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_dir, minilm_zip, smollm2_gguf):
    root = tmp_path_factory.mktemp("web")
    home = root / "home"
    home.mkdir()
    # short answers: these tests check the page, not the tiny model's prose
    (home / "config.toml").write_text("[retrieval]\ntop_k = 3\n\n[generation]\nmax_answer_tokens = 40\n", encoding="utf-8")
    team = root / "team"
    (team / "handbook").mkdir(parents=True)
    (team / "handbook" / "offline-install.md").write_text(HANDBOOK, encoding="utf-8")
    (team / "handbook" / "firewall.md").write_text(HOSTILE, encoding="utf-8")
    (team / "报销.md").write_text(CHINESE, encoding="utf-8")
    _pdf_excerpt(shared_dir, team / "debian-excerpt.pdf")
    hr = root / "hr"
    hr.mkdir()
    (hr / "salaries.md").write_text("# Salaries\n\nSalary bands are reviewed every April.\n", encoding="utf-8")
    env = {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", INGEST, str(team), str(hr)], cwd=REPO, env=env, check=True, timeout=600,
                   capture_output=True)
    keys = {
        "admin": _cli(home, "keys", "create", "root", "--admin").strip(),
        "writer": _cli(home, "keys", "create", "wendy", "--kb", "team:write").strip(),
        "reader": _cli(home, "keys", "create", "rita", "--kb", "team:read").strip(),
        "temp": _cli(home, "keys", "create", "temp", "--kb", "team:read").strip(),
    }
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "localrag", "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=120)
        srv = Server(f"http://127.0.0.1:{port}", home, keys, proc)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if SHOTS.is_dir():  # beside the screenshots, for whoever looks into a failure
            shutil.copy(root / "server.log", SHOTS / "server.log")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def pages(browser, server):
    """New browser contexts (each its own sessionStorage/localStorage) that record every request:
    at the end, nothing may have gone anywhere but the server."""
    contexts, requests, errors = [], [], []

    def make(width=1100, height=760, locale="en-US"):
        ctx = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())
        ctx.on("page", lambda pg: pg.on("request", lambda r: requests.append(r.url)))
        page.set_default_timeout(120_000)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    # chrome:// and chrome-extension:// are the browser's own PDF viewer, read from its install
    outside = [u for u in requests if not u.startswith((server.url + "/", "data:", "blob:", "chrome://", "chrome-extension://"))]
    assert not outside, f"the page reached outside the server: {outside}"
    assert not errors, f"script errors on the page: {errors}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def sign_in(page, server, key: str) -> None:
    page.goto(server.url + "/")
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")


def open_sources(answer) -> None:
    """Unfold the lists of sources the model was given but did not cite, and those left out
    (the tiny model cites as it pleases, so a test cannot know in which list a file lands)."""
    for details in answer.locator(".sources details").all():
        if details.get_attribute("open") is None:
            details.locator("summary").click()


def ask(page, question: str):
    page.fill("#question", question)
    page.press("#question", "Enter")
    answer = page.locator(".msg.assistant").last
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('.msg.assistant')].pop();"
        " return m && !m.classList.contains('streaming'); }")
    return answer


# ---------------------------------------------------------------------------- tests


def test_sign_in_ask_stream_follow_up_and_check_a_citation(pages, server):
    page = pages()
    sign_in(page, server, server.keys["writer"])
    assert page.locator("#kb-select option").all_inner_texts() == ["team"]  # not "hr": this key cannot read it
    stages, bodies = [], []
    page.expose_function("recordStage", lambda s, b: (stages.append(s), bodies.append(b)))
    page.evaluate("""() => new MutationObserver(() => {
        const s = document.getElementById('status'); const m = [...document.querySelectorAll('.msg.assistant .body')].pop();
        const bar = s.dataset.stage === 'reading' ? ` bar:${document.getElementById('status-bar').style.transition}` : '';
        window.recordStage(s.hidden ? '' : s.dataset.stage + bar, m ? m.textContent : '');
      }).observe(document.getElementById('messages').parentElement, {subtree: true, childList: true, characterData: true, attributes: true})""")
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)

    answer = ask(page, "How do I install localrag on an air-gapped machine?")
    assert sent[0]["model"] == "kb:team" and sent[0]["stream"] is True
    assert "sending" in stages, stages
    # "retrieving" may share a network read with "reading"; reading fills a bar over the server's prefill estimate
    assert any(re.fullmatch(r"reading bar:width [\d.]+s linear", s) for s in stages), stages
    partial = {b for b in bodies if b}
    assert len(partial) > 2, "the answer should appear piece by piece"
    assert answer.locator(".body").inner_text().strip()
    assert answer.locator(".meta").inner_text()  # timings footer
    # the sources the model was given are listed; opening one shows the exact passage
    items = answer.locator(".src-item")
    assert items.count() >= 1
    # the tiny model may or may not write [n]: click its citation of the handbook if there is one
    link = answer.locator("a.cite[aria-label*='offline-install.md']")
    if not link.count():
        open_sources(answer)
    target = link.first if link.count() else items.filter(has_text="offline-install.md").first
    target.click()
    card = page.locator("#cite-card")
    assert card.is_visible()
    assert "offline-install.md" in card.locator(".cite-file").inner_text()
    assert "blue suitcase" in card.locator(".cite-text").inner_text()
    assert "Installing offline" in card.locator(".cite-where").inner_text()  # the passage's heading
    shot(page, "chat-answer")
    page.keyboard.press("Escape")
    assert not card.is_visible()

    # a follow-up sends the whole conversation
    ask(page, "And how are updates delivered?")
    history = sent[1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[0]["content"].startswith("How do I install") and history[1]["content"]

    # the conversation survives a reload; it can be renamed and deleted
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    assert page.locator(".msg.assistant").count() == 2
    page.click(".conv .conv-rename")
    page.fill(".conv-edit", "Offline install")
    page.press(".conv-edit", "Enter")
    assert page.locator(".conv-title").first.inner_text() == "Offline install"
    assert "Offline install" in page.evaluate("() => JSON.stringify(localStorage)")
    page.click(".conv .conv-delete")
    assert page.locator(".conv").count() == 0
    assert page.locator(".msg").count() == 0


def test_stop_ends_generation(pages, server):
    page = pages()
    sign_in(page, server, server.keys["reader"])
    page.fill("#question", "How do I install localrag offline with the blue suitcase procedure? Explain every step in detail.")
    page.press("#question", "Enter")
    page.wait_for_selector("#stop:not([hidden])")
    page.keyboard.press("Escape")
    page.wait_for_selector(".msg.assistant .note:not([hidden])")
    assert page.locator(".msg.assistant .note").inner_text() == "Stopped."
    assert page.locator("#send").is_visible() and page.locator("#stop").is_hidden()


def test_a_name_no_document_mentions_is_shown_with_the_sources(pages, server):
    page = pages()
    sign_in(page, server, server.keys["reader"])
    answer = ask(page, "How do I install localrag offline on Kubernetes?")
    note = answer.locator(".src-unmentioned")
    assert note.inner_text() == 'No document in this knowledge base mentions "Kubernetes".'
    # it is stored with the conversation: a reload shows it again
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    assert page.locator(".msg.assistant .src-unmentioned").last.inner_text() == note.inner_text()


def test_pdf_citation_opens_the_original_at_the_cited_page(pages, server):
    page = pages()
    sign_in(page, server, server.keys["reader"])
    answer = ask(page, "What is the proper shutdown procedure before power can safely be turned off?")
    open_sources(answer)
    pdf = answer.locator(".src-list li", has_text="debian-excerpt.pdf").first
    assert pdf.count(), answer.inner_text()
    label = pdf.locator(".src-label").inner_text()
    assert "page 2" in label, label  # shutdown is on page 2 of the excerpt
    pdf.locator(".src-item").click()
    card = page.locator("#cite-card")
    assert "shutdown" in card.locator(".cite-text").inner_text().lower()
    open_link = card.locator(".cite-open")
    assert open_link.inner_text() == "Open document at page 2"
    href = open_link.get_attribute("href")
    assert href.endswith("#page=2")
    shot(page, "pdf-citation")
    with page.context.expect_page() as popup:
        open_link.click()
    tab = popup.value
    assert tab.url.endswith("#page=2") and tab.url.startswith(server.url)
    # the link works without the Bearer header (its token is the capability) and is the real PDF
    resp = page.context.request.get(href.split("#")[0])
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/pdf")
    assert resp.body()[:5] == b"%PDF-"


def _recorded_stream(sources: list[dict]) -> str:
    """What an R1 model's answer looks like on the wire (reasoning, then a cited answer)."""
    def chunk(delta=None, lr=None, **extra):
        c = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0, "model": "kb:team",
             "choices": [{"index": 0, "delta": delta or {}, "finish_reason": None}]}
        if lr:
            c["localrag"] = lr
        c.update(extra)
        return c

    given = [dict(s, cited=s["n"] in (1, 2)) for s in sources]
    chunks = [
        chunk({"role": "assistant"}, {"stage": "retrieving"}),
        chunk(lr={"stage": "reading", "prompt_tokens": 812, "prefill_s": 0.6, "sources": given,
                  "left_out": [{"source": "handbook/old-manual.md", "page": None, "heading": "Appendix",
                                "reason": "no room left in the context window"}]}),
        chunk(lr={"stage": "thinking"}),
        *[chunk({"reasoning_content": piece}) for piece in
          ("The user asks how to install offline. ", "Passage [1] describes the wheelhouse; ",
           "passage [2] says to shut down cleanly <b>first</b>.")],
        chunk(lr={"stage": "answering"}),
        *[chunk({"content": piece}) for piece in
          ("Copy the **wheelhouse** to the machine and run the install script offline [1]. ",
           "Shut the system down properly before power-off [2].\n\n",
           "```sh\n./install.sh --offline <img src=x onerror=\"window.__pwned=3\">\n```\n",
           "Raw HTML stays text: <script>window.__pwned=4</script>")],
        chunk(finish_reason=None, sources=given,
              usage={"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876,
                     "completion_tokens_details": {"reasoning_tokens": 21}},
              localrag={"stage": "done", "citations": [1, 2], "not_found": False,
                        "timings": {"retrieve_s": 0.05, "ttft_s": 1.4, "prompt_tokens": 812, "thinking_tokens": 21,
                                    "thinking_s": 2.3, "gen_tokens": 43, "total_s": 4.1},
                        "figure_quotes": [{"figure": "256", "n": 1, "quote": "checked with its SHA-256 list"},
                                          {"figure": "42", "n": 7, "quote": "<img src=x onerror=\"window.__pwned=5\"> 42"}]}),
    ]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    return "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def _real_sources(server) -> list[dict]:
    """Passages from the real KB, with the server's real links, numbered as a chat would."""
    hits = {}
    for query in ("air-gapped install wheelhouse", "proper shutdown procedure power", "zebra firewall uploads"):
        for hit in server.api("POST", "/api/kbs/team/search", server.keys["admin"], {"query": query, "k": 1}):
            hits.setdefault(hit["source"], hit)
    docs = {d["source"]: d for d in server.api("GET", "/api/kbs/team/documents", server.keys["admin"])}
    out = []
    for n, hit in enumerate(hits.values(), 1):
        out.append({"n": n, "source": hit["source"], "page": hit.get("page"), "heading": hit.get("heading") or "",
                    "text": hit["text"], "url": hit.get("url") or docs[hit["source"]]["url"], "cited": False})
    return out


def test_reasoning_block_and_safe_rendering_from_a_recorded_r1_stream(pages, server):
    page = pages(width=1000, height=700)
    sources = _real_sources(server)
    assert [s["source"] for s in sources] == ["handbook/offline-install.md", "debian-excerpt.pdf", "handbook/firewall.md"]
    body = _recorded_stream(sources)
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}, body=body))
    sign_in(page, server, server.keys["reader"])
    answer = ask(page, "How do I install localrag offline?")

    reasoning = answer.locator("details.reasoning")
    assert reasoning.is_visible() and reasoning.get_attribute("open") is None  # closed by default
    assert answer.locator(".reasoning summary").inner_text() == "Thought for 2.3 s (21 tokens)"
    assert not answer.locator(".reasoning-body").is_visible()
    answer.locator(".reasoning summary").click()
    assert "<b>first</b>" in answer.locator(".reasoning-body").inner_text()  # shown as text
    answer.locator(".reasoning summary").click()

    # every [n] is a link; the sources given but not cited, and those left out, are listed apart
    assert answer.locator(".body a.cite").all_inner_texts() == ["[1]", "[2]"]
    assert "firewall.md" in answer.locator(".src-uncited").text_content()
    leftout = answer.locator(".src-leftout").text_content()
    assert "old-manual.md" in leftout and "no room left in the context window" in leftout
    # each figure with the source line that holds it; a quote is text, a number with no source is not a link
    figures = answer.locator(".src-figures li").all_inner_texts()
    assert len(figures) == 2 and "256" in figures[0] and "checked with its SHA-256 list" in figures[0]
    assert answer.locator(".src-figures a.cite").all_inner_texts() == ["[1]"]
    assert 'onerror="window.__pwned=5"' in figures[1] and answer.locator(".src-figures img").count() == 0
    # model output that holds HTML is rendered as text, never as elements
    text = answer.locator(".body").inner_text()
    assert "<script>window.__pwned=4</script>" in text and 'onerror="window.__pwned=3"' in text
    assert answer.locator(".body script, .body img").count() == 0

    answer.locator(".body a.cite", has_text="[1]").hover()  # a preview on hover...
    card = page.locator("#cite-card")
    assert "blue suitcase" in card.locator(".cite-text").inner_text()
    page.mouse.move(0, 0)
    page.locator("#cite-card").wait_for(state="hidden")
    answer.locator(".body a.cite", has_text="[2]").click()  # ...pinned by a click
    # the PDF citation carries the cited page into the link
    assert card.locator(".cite-open").get_attribute("href").endswith(f"#page={sources[1]['page']}")
    assert card.locator(".cite-open").inner_text() == f"Open document at page {sources[1]['page']}"
    page.wait_for_timeout(200)
    shot(page, "chat-citation")
    if os.environ.get("LOCALRAG_UPDATE_DOCS_IMG"):  # the README's picture
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(REPO / "docs" / "img" / "chat-citation.png"))
    page.keyboard.press("Escape")
    # the hostile document's passage: shown verbatim, nothing runs
    page.mouse.move(0, 0)
    answer.locator(".src-uncited summary").click()
    answer.locator(".src-uncited .src-item").first.click()
    passage = card.locator(".cite-text").inner_text()
    assert "<script>window.__pwned = 1</script>" in passage and 'onerror="window.__pwned = 2"' in passage
    assert page.locator("#app img:not([src='/static/icon.svg'])").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    shot(page, "hostile-passage")


def test_a_citation_the_server_removed_is_not_left_on_the_page(pages, server):
    """The stream showed "[1]" after "the documents do not mention"; the final chunk carries the
    answer without it (the session uncites a bare abstention), and the page must show that. The
    reading stage's rendered question (cross-lingual search) is shown with the sources."""
    page = pages()
    given = [dict(s, cited=False) for s in _real_sources(server)[:1]]
    base = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0, "model": "kb:team"}

    def chunk(delta=None, finish=None, **extra):
        return {**base, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}

    chunks = [chunk({"role": "assistant"}, localrag={"stage": "reading", "prompt_tokens": 300, "prefill_s": 0.2,
                                                     "sources": given, "left_out": [],
                                                     "rendered": "Which Raft library does Milvus use?"}),
              chunk({"content": "The documents do not mention Raft."}), chunk({"content": " [1]"}),
              chunk(finish="stop", sources=given, localrag={
                  "stage": "done", "citations": [], "not_found": False, "content": "The documents do not mention Raft.",
                  "timings": {"ttft_s": 0.4, "prompt_tokens": 300, "gen_tokens": 9, "total_s": 0.7}})]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    sign_in(page, server, server.keys["reader"])
    answer = ask(page, "Which Raft library does it use?")
    assert answer.locator(".body").inner_text().strip() == "The documents do not mention Raft."
    assert answer.locator(".body a.cite").count() == 0
    # the question as also searched in the documents' language is shown with the sources
    assert answer.locator(".src-rendered").inner_text() == "Also searched as: Which Raft library does Milvus use?"
    page.reload()  # the stored conversation holds the final text too
    page.wait_for_selector("#app:not([hidden])")
    assert page.locator(".msg.assistant .body").last.inner_text().strip() == "The documents do not mention Raft."


def test_upload_a_folder_see_the_summary_and_search_it(pages, server, tmp_path):
    page = pages()
    sign_in(page, server, server.keys["writer"])
    page.click("#tab-kbs")
    page.wait_for_selector("#doc-rows tr")
    assert page.locator("#kb-rows tr").all_inner_texts()[0].startswith("team")
    assert page.locator("#kb-rows tr").count() == 1
    folder = tmp_path / "policies"
    (folder / "travel").mkdir(parents=True)
    (folder / "travel" / "trains.md").write_text(
        "# Trains\n\nStaff travelling by train book second class; the quokka rule allows first class after 22:00.\n",
        encoding="utf-8")
    (folder / "tool.exe").write_bytes(b"MZ\x90\x00" + bytes(2000))
    page.set_input_files("#pick-folder", str(folder))
    batch = page.locator(".batch").first
    batch.locator(".job-line", has_text="Done").wait_for()
    assert batch.locator("li[data-path='policies/travel/trains.md']").get_attribute("data-state") == "indexed"
    skipped = batch.locator("li[data-path='policies/tool.exe']")
    assert skipped.get_attribute("data-state") == "skipped"
    assert "skipped:" in skipped.inner_text()
    assert "tool.exe" in batch.locator(".job-summary").inner_text()
    shot(page, "upload-summary")
    row = page.locator("#doc-rows tr", has_text="trains.md")
    row.wait_for()
    hits = server.api("POST", "/api/kbs/team/search", server.keys["reader"], {"query": "quokka rule first class train", "k": 1})
    assert hits[0]["source"].endswith("trains.md")

    # a file dropped on the zone is uploaded too
    page.evaluate("""() => { const dt = new DataTransfer();
        dt.items.add(new File(['# Bikes\\n\\nBikes are parked in the basement, level -2.\\n'], 'bikes.md', {type: 'text/markdown'}));
        document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }""")
    page.locator("#doc-rows tr", has_text="bikes.md").wait_for()

    # remove a document
    row = page.locator("#doc-rows tr", has_text="trains.md")
    row.locator("button", has_text="Remove").click()
    page.locator("#kb-message", has_text="Removed").wait_for()
    assert page.locator("#doc-rows tr", has_text="trains.md").count() == 0
    assert not any(h["source"].endswith("trains.md") for h in server.api(
        "POST", "/api/kbs/team/search", server.keys["reader"], {"query": "quokka rule first class train", "k": 3}))


def test_a_reader_cannot_upload_or_remove(pages, server):
    page = pages()
    sign_in(page, server, server.keys["reader"])
    page.click("#tab-kbs")
    page.wait_for_selector("#doc-rows tr")
    assert page.locator("#upload").is_hidden()
    assert page.locator("#readonly").is_visible()
    assert page.locator("#doc-rows button", has_text="Remove").count() == 0
    assert page.locator("#doc-rows a", has_text="Open").count() >= 1
    status = page.evaluate("""async (key) => (await fetch('/api/kbs/team/uploads', {method: 'POST',
        headers: {Authorization: 'Bearer ' + key}, body: new FormData()})).status""", server.keys["reader"])
    assert status == 403
    shot(page, "reader-kbs")


def test_a_bad_key_is_refused_and_a_revoked_key_is_signed_out(pages, server):
    page = pages()
    page.goto(server.url + "/")
    page.fill("#key", "lrag_nope_nope")
    page.click("#signin-form button[type=submit]")
    page.locator("#signin-error", has_text="This key was not accepted.").wait_for()
    assert page.locator("#app").is_hidden()
    sign_in(page, server, server.keys["temp"])
    _cli(server.home, "keys", "revoke", "temp")
    page.fill("#question", "Anyone there?")
    page.press("#question", "Enter")
    page.locator("#signin-error", has_text="no longer valid").wait_for()
    assert page.locator("#app").is_hidden()
    assert page.evaluate("() => sessionStorage.getItem('localrag.key')") is None


def test_chinese_ui_and_question_at_360_px(pages, server):
    page = pages(width=360, height=740, locale="zh-CN")
    sign_in(page, server, server.keys["reader"])
    assert page.locator("#tab-chat").inner_text() == "问答"
    assert page.evaluate("() => document.documentElement.lang") == "zh-CN"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    assert page.locator("#sidebar").bounding_box()["x"] < 0  # the conversation list is a drawer here
    answer = ask(page, "出差回来后多久内要提交报销单？")
    assert page.locator(".msg.user .body").inner_text() == "出差回来后多久内要提交报销单？"
    open_sources(answer)
    item = answer.locator(".src-item", has_text="报销.md").first
    item.click()
    assert "十五个工作日" in page.locator("#cite-card .cite-text").inner_text()
    box = page.locator("#cite-card").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360.5
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    fonts = page.evaluate("() => getComputedStyle(document.body).fontFamily")
    assert "Noto Sans CJK SC" in fonts and "WenQuanYi Micro Hei" in fonts
    shot(page, "chat-360-zh")
    page.keyboard.press("Escape")
    page.click("#menu-toggle")
    page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")  # slides in
    assert page.locator("#menu-toggle").get_attribute("aria-expanded") == "true"
    shot(page, "menu-360-zh")


def test_shift_enter_makes_a_new_line_and_the_page_is_labelled(pages, server):
    page = pages()
    sign_in(page, server, server.keys["reader"])
    page.fill("#question", "first line")
    page.press("#question", "Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#question") == "first line\nsecond line"
    assert page.locator(".msg").count() == 0  # nothing was sent
    for sel in ("#question", "#kb-select", "#send", "#menu-toggle", "#new-chat", "#signout"):
        name = page.evaluate("""(sel) => { const el = document.querySelector(sel);
            const label = el.labels && el.labels[0]; return el.getAttribute('aria-label') || (label && label.textContent) || el.textContent; }""", sel)
        assert name and name.strip(), sel


def test_markdown_renderer_builds_only_safe_elements(pages, server):
    """md.js on hostile and awkward input: only its fixed elements appear, attributes carry no
    script, `javascript:` links stay text, an unclosed fence while streaming is still code."""
    page = pages()
    page.goto(server.url + "/")
    result = page.evaluate("""async () => {
        const { renderMarkdown } = await import('/static/js/md.js');
        const cases = [
          '<img src=x onerror="window.__pwned=1"> **bold <b>x</b>**',
          '[click](javascript:window.__pwned=2) and [ok](https://example.org/a) and [rel](/static/x)',
          '```html\\n<script>window.__pwned=3</script>\\n',
          '| a | <i>b</i> |\\n|---|---|\\n| `c` | [1] |',
          '- one\\n  - nested <svg onload=alert(1)>\\n- two\\n\\n1. first\\n2. second',
          '> quoted <iframe src="http://203.0.113.9/"></iframe>\\n\\n# 标题 *斜体*',
          'cite [1] and [1, 2] but not [9]',
        ];
        const allowed = new Set(['P','STRONG','EM','DEL','CODE','PRE','DIV','SPAN','BUTTON','A','BR','UL','OL','LI',
                                 'BLOCKQUOTE','TABLE','THEAD','TBODY','TR','TH','TD','H3','H4','H5','H6','HR']);
        const out = [];
        for (const text of cases) {
          const box = document.createElement('div');
          box.append(renderMarkdown(text, { cite: (n) => n <= 2 ? Object.assign(document.createElement('a'), {className: 'cite', textContent: `[${n}]`}) : null }));
          const tags = [...box.querySelectorAll('*')].map((e) => e.tagName);
          const attrs = [...box.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name));
          const hrefs = [...box.querySelectorAll('a[href]')].map((a) => a.getAttribute('href'));
          out.push({ text: box.textContent, bad: tags.filter((t) => !allowed.has(t)), attrs, hrefs, tags,
                     cites: box.querySelectorAll('a.cite').length });
        }
        return out;
    }""")
    for case in result:
        assert case["bad"] == [], case
        assert not [a for a in case["attrs"] if a.startswith("on") or a in ("src", "style")], case
    assert '<img src=x onerror="window.__pwned=1">' in result[0]["text"] and "STRONG" in result[0]["tags"]
    assert result[1]["hrefs"] == ["https://example.org/a", "/static/x"]
    assert "[click](javascript:window.__pwned=2)" in result[1]["text"]
    assert "PRE" in result[2]["tags"] and "<script>" in result[2]["text"]
    assert "TABLE" in result[3]["tags"] and result[3]["cites"] == 1
    assert result[4]["tags"].count("UL") == 2 and "OL" in result[4]["tags"]
    assert "BLOCKQUOTE" in result[5]["tags"] and "H3" in result[5]["tags"] and "EM" in result[5]["tags"]
    assert result[6]["cites"] == 3 and "[9]" in result[6]["text"]
    assert page.evaluate("() => window.__pwned") is None
