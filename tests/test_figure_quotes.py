"""Each figure of an answer is shown with the source line that holds it (rag/figure_quotes.py).

The 1.5B answers a quantity question the documents never settle with a number they hold in
another context ("a description can be 255 characters", where 255 is a name's limit): the quote
lets the reader see that. Unit tests on the rule, then one ask through the API, the CLI view and
`localrag serve` with a scripted model (an OpenAI-compatible server replaying an answer)."""

from __future__ import annotations

import io

import pytest

from localrag.rag.figure_quotes import MAX_QUOTES, quotes
from tests.kb_helpers import install_minilm, minilm_dir, settings_for  # noqa: F401
from tests.test_remote import Scripted

LIMITS = ("# Limits\n\nMilvus sets these limits.\n\n| Resource | Limit |\n|---|---|\n"
          "| Length of a resource name | 255 characters |\n| Number of fields in a collection | 64 |\n")
TIMING = ("# Time sync\n\nEach proxy reports its largest timestamp every 200 ms by default, so the root "
          "coordinator can allocate timestamps. A loop in the example runs `range(10)` times. Idle "
          "connections are closed after 10 minutes.\n")


def test_a_figure_from_a_table_is_quoted_with_its_row():
    got = quotes("A collection's description can be 255 characters long [1].", {1: LIMITS, 2: TIMING},
                 "How long can a collection's description be?")
    assert [(q.figure, q.n, q.quote) for q in got] == [("255", 1, "Length of a resource name | 255 characters")]


def test_the_cited_source_is_quoted_first_and_a_unit_finds_its_own_line():
    sources = {1: "Our cluster has 200 nodes.", 2: TIMING}
    got = quotes("The proxy reports every 200 milliseconds [2].", sources, "How often?")
    assert got[0].n == 2 and got[0].quote.startswith("Each proxy reports its largest timestamp every 200 ms")
    got = quotes("It closes idle connections after 10 minutes.", {1: TIMING}, "")
    assert got[0].quote == "Idle connections are closed after 10 minutes."  # not the range(10) sentence


def test_figures_of_the_question_of_code_and_of_nowhere_are_not_quoted():
    sources = {1: LIMITS}
    assert quotes("Yes, 64 is the limit [1].", sources, "Is 64 the most fields a collection can have?") == []
    assert quotes("Set `max_fields=64` [1].", sources, "") == []
    assert quotes("It allows 4096 partitions.", sources, "") == []
    many = "It has 11, 12, 13, 14 and 15 parts."
    assert len(quotes(many, {1: "Part 11.\nPart 12.\nPart 13.\nPart 14.\nPart 15."}, "")) == MAX_QUOTES


def _q(answer, sources, question="", current=()):
    return [(q.figure, q.n, q.quote) for q in quotes(answer, sources, question, current)]


def test_the_quote_is_the_sources_own_text_and_never_a_longer_number():
    assert _q("Below 16,384 [1].", {1: "<td>topK</td><td>Must be less than 16,384.</td>"}) == [
        ("16,384", 1, "topK Must be less than 16,384.")]  # its digit groups, its markup dropped
    assert _q("nlist is 1100 [1].", {1: "| nlist | Number of units | [1,100] |"}) == []  # a range
    assert _q("Uptime 99% [1].", {1: "Availability of 99.9% for clusters."}) == []
    assert _q("It needs 10 GB [1].", {1: "It needs 10.5 GB of memory."}) == []
    assert _q("The 99th percentile is 500 ms [1].", {1: "p99 latency: 500 ms at the 99th percentile."}) == [
        ("500 ms", 1, "p99 latency: 500 ms at the 99th percentile.")]  # no row for the ordinal


def test_a_long_table_row_is_quoted_as_its_subject_and_value():
    row = ("| `retentionTimeInMinutes` | The maximum retention time of acked messages of each topic in RocksMQ. "
           "Acked messages in each topic are kept for the specified period of time and then cleared. Unit: Minute. | 4320 |")
    assert _q("It keeps them 4320 minutes [1].", {1: row}) == [("4320 minutes", 1, "retentionTimeInMinutes | 4320")]


def test_the_place_with_the_unit_and_outside_code_is_quoted():
    src = "```python\nfor i in range(10):\n    pass\n```\n\n| Parameter | Timeout (s) |\n|---|---|\n| idle | 10 |\n"
    assert _q("Idle after 10 seconds [1].", {1: src}) == [("10 seconds", 1, "idle | 10")]


def test_a_pointer_sentences_source_and_this_turns_sources_come_first():
    sources = {1: "Names: 255 characters max.", 2: "| Description | 255 characters |"}
    assert _q("The description can be 255 characters long. This is stated in [2].", sources)[0][1] == 2
    earlier_and_now = {1: "Old turn: 255 characters.", 5: "This turn: 255 characters."}
    assert _q("It can be 255 characters.", earlier_and_now, current=[5])[0][1] == 5


def test_one_line_with_several_figures_is_one_row_and_a_copied_line_is_not_repeated():
    src = {1: "Every 500 ms, or 10 ms under load, the proxy reports.\nA segment holds 1024 rows."}
    assert _q("It reports every 500 ms, or 10 ms under load [1].", src) == [
        ("500 ms, 10 ms", 1, "Every 500 ms, or 10 ms under load, the proxy reports.")]
    assert _q("A segment holds 1024 rows [1].", src) == []  # the answer already shows those words


def test_a_long_chinese_line_is_cut_by_its_width_around_the_figure():
    zh = "默认情况下" + "，这是一个很长的说明" * 20 + "，单次插入数据不能超过 1024 MB，这是 gRPC 的限制" + "，还有别的说明" * 20 + "。"
    (figure, n, quote), = _q("最多 1024 MB [1]。", {1: zh})
    assert "单次插入数据不能超过 1024 MB" in quote and quote.startswith("…") and quote.endswith("…")
    assert 120 <= sum(2 if "\u4e00" <= c <= "\u9fff" or c in "，…" else 1 for c in quote) <= 170


@pytest.fixture(scope="module")
def limits_home(tmp_path_factory, minilm_dir):
    from localrag import LocalRAG

    home = tmp_path_factory.mktemp("quotes") / "home"
    docs = home.parent / "docs"
    docs.mkdir(parents=True)
    home.mkdir()
    (docs / "limits.md").write_text(LIMITS, encoding="utf-8")
    install_minilm(home, minilm_dir)
    with LocalRAG(settings_for(home)) as rag:
        rag.ingest([docs], kb="limits", embedder="all-minilm-l6-v2")
    return home


def test_every_front_door_shows_where_the_figure_stands(limits_home):
    import openai
    from rich.console import Console

    from localrag import Done, LocalRAG
    from localrag.cli.views.answer import AnswerView
    from tests.server_helpers import Server, make_key

    question = "How long can a collection's description be?"
    said = "A collection's description can be 255 characters long [1]."
    model = Scripted(models=("any",), chunks=[{"content": said[i : i + 5]} for i in range(0, len(said), 5)])
    try:
        with LocalRAG(settings_for(limits_home, llm_url=model.url)) as rag:
            events = list(rag.ask(question, kb="limits"))
        result = next(e for e in events if isinstance(e, Done)).result
        shown = io.StringIO()
        AnswerView(Console(file=shown, width=200), show_thinking=False, verbose=False).render(iter(events))
        key = make_key(limits_home, "quote-reader", "--kb", "limits:read")
        server = Server(limits_home, "--kb", "limits", "--llm-url", model.url).start()
        try:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            resp = client.chat.completions.create(model="kb:limits", messages=[{"role": "user", "content": question}])
        finally:
            server.stop()
    finally:
        model.close()
    row = "Length of a resource name | 255 characters"
    assert [(q.figure, q.quote) for q in result.figure_quotes] == [("255", row)]
    assert result.to_json()["figure_quotes"] == [{"figure": "255", "n": result.figure_quotes[0].n, "quote": row}]
    assert "Figures, as the sources give them" in shown.getvalue() and row in shown.getvalue()
    assert resp.model_extra["localrag"]["figure_quotes"][0]["quote"] == row
