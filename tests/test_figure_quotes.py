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
    assert [(q.figure, q.n, q.quote) for q in got] == [("255", 1, "| Length of a resource name | 255 characters |")]


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
    assert len(quotes(many, {1: "Parts: 11, 12, 13, 14, 15."}, "")) == MAX_QUOTES


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
    row = "| Length of a resource name | 255 characters |"
    assert [(q.figure, q.quote) for q in result.figure_quotes] == [("255", row)]
    assert result.to_json()["figure_quotes"] == [{"figure": "255", "n": result.figure_quotes[0].n, "quote": row}]
    assert "Figures, as the sources give them" in shown.getvalue() and row in shown.getvalue()
    assert resp.model_extra["localrag"]["figure_quotes"][0]["quote"] == row
