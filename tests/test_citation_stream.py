"""The answer as it streams: markers cleaned as the final answer's are, before the reader sees them.

A 1.5B copies the prompt's ``[source n="4"]`` tag now and then and cites sources that do not
exist; the final answer has always been cleaned, but a streaming reader (the CLI, an SSE client of
``localrag serve``) saw the raw marker for the tokens it took to close.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localrag.rag.answer_text import CitationStream, clean_citations

VALID = {1, 2, 3, 4}
ANSWERS = [
    '根据 [source n="4"] 文档，单次插入不能超过 1024 MB。',
    "Milvus standalone uses RocksDB [2]. A cluster uses Pulsar [7].",
    "It keeps 2 replicas [9] . Then [1, 9] it loads.",
    "Call `flush()` [1]. In code `x[7]` is an index [3]",
    "```python\nvectors[7] = 1\n```\nThat sets it [3].",
    "An open span `still [7] going\nnext line [7] ends. [2]",
    "See [the guide] and <source n=\"2\">it</source> says so [2][8].",
    "Use x < 5 or [ or <s or [s until the end [1",
    "Unclosed fence ```\nstill code [9]",
    "   [1] Shard 是指…\n[2] Partition [12] 是指…  ",
    # the prompt's own tag, as the model sees it: quoted attributes that hold ">" and "]"
    'Milvus uses RocksDB <source n="4" file="guide.md" section="Guide > Limits">. Next sentence [2].',
    'It says so [source n="3" file="a]b.md" section="' + "Deep > " * 40 + 'End"] and more [9]。',
    "X [/source] Y [2]. Z ‹source n=\"4\"› ‹source n=\"1\"> ok",
    "Sources [1, 2, 3 and 4] agree; [1, 2, …, 15] do not.",
    "The default is `nlist=128 [7] for IVF [2]\n\nNext paragraph [1].",
    # a copied tag whose bare number carries a stray quote: read as its number, never shown raw
    'It says [source n=9"] so [1]. And <source n=4"> too.',
]


def _stream(answer: str, cuts: list[int]) -> list[str]:
    s = CitationStream(VALID)
    pieces, last = [], 0
    for cut in sorted(set(cuts)) + [len(answer)]:
        pieces.append(s.feed(answer[last:cut]))
        last = cut
    return pieces + [s.flush()]


def _shown_states(pieces: list[str]) -> list[str]:
    return ["".join(pieces[: i + 1]) for i in range(len(pieces))]


def test_a_copied_source_tag_is_never_shown_raw_token_by_token():
    answer = ANSWERS[0]
    pieces = _stream(answer, list(range(len(answer))))
    assert "".join(pieces) == "根据 [4] 文档，单次插入不能超过 1024 MB。"
    for shown in _shown_states(pieces):
        assert "source" not in shown and "[s" not in shown and 'n="' not in shown


def test_a_number_matching_no_source_is_never_shown_even_for_a_moment():
    answer = ANSWERS[1]
    pieces = _stream(answer, list(range(len(answer))))
    assert "".join(pieces) == "Milvus standalone uses RocksDB [2]. A cluster uses Pulsar."
    assert not any("[7" in shown for shown in _shown_states(pieces))


def test_code_is_left_alone_while_streaming():
    for answer in ANSWERS[3:5] + ANSWERS[8:9]:
        pieces = _stream(answer, list(range(len(answer))))
        assert "".join(pieces) == clean_citations(answer, VALID)[0]
        assert "[7]" in "".join(pieces) or "[9]" in "".join(pieces)


def test_a_backtick_its_line_never_closes_is_prose_and_shows_nothing_early():
    answer = ANSWERS[5]
    pieces = _stream(answer, list(range(len(answer))))
    assert "".join(pieces) == "An open span `still going\nnext line ends. [2]"
    assert not any("[7" in shown for shown in _shown_states(pieces))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(ANSWERS), st.lists(st.integers(min_value=0, max_value=80), max_size=30))
def test_any_split_streams_exactly_the_cleaned_answer(answer, cuts):
    pieces = _stream(answer, [c for c in cuts if c < len(answer)])
    assert "".join(pieces) == clean_citations(answer.rstrip(), VALID)[0]
    # what was shown is always a prefix of the final, so nothing shown is ever taken back
    final = "".join(pieces)
    assert all(final.startswith(shown) for shown in _shown_states(pieces))
    for shown in _shown_states(pieces):
        prose = re.sub(r"```.*?(?:```|$)|`[^`\n]*`", "", shown, flags=re.S)
        assert not re.search(r"\[(?:source|\s*(?:[5-9]|1\d))", prose)


def test_a_copied_tag_with_a_stray_quote_is_never_shown_raw():
    answer = ANSWERS[15]
    pieces = _stream(answer, list(range(len(answer))))
    assert "".join(pieces) == "It says so [1]. And [4] too."
    assert not any("source" in shown or "n=" in shown for shown in _shown_states(pieces))


def test_the_prompts_own_tag_with_a_heading_path_streams_as_its_number():
    answer = ANSWERS[10]
    pieces = _stream(answer, list(range(len(answer))))
    assert "".join(pieces) == "Milvus uses RocksDB [4]. Next sentence [2]."
    assert not any("source" in shown or "Limits" in shown for shown in _shown_states(pieces))


def test_a_token_that_is_only_a_line_break_after_a_marker():
    answer = ANSWERS[14]
    cut = answer.index("\n")
    pieces = _stream(answer, [cut, cut + 1, cut + 2])
    assert "".join(pieces) == clean_citations(answer, VALID)[0]
    assert not any("[7" in shown for shown in _shown_states(pieces))


# Pieces a model writes, mixed at random: brackets, tags and their attributes, code marks, CJK
# punctuation, line breaks. Every mix, split anywhere, must stream exactly its cleaned text.
TOKENS = ["[", "]", "7", "2", "10", " ", ".", "`", "``", "```", "~~~", "<", ">", "‹", "/", "source", "/source",
          " n=", '"4"', "'9'", " file=", '"a > b"', '"x]y"', "-", " and ", "，", "。", "\t", "\u3000", "\n", "\n\n",
          "](http://x)", "Milvus", "是指", '4"']


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=24), st.lists(st.integers(0, 120), max_size=40))
def test_any_mix_of_marker_pieces_streams_exactly_its_cleaned_text(tokens, cuts):
    answer = "".join(tokens) + " end"
    pieces = _stream(answer, [c for c in cuts if c < len(answer)])
    final = clean_citations(answer.rstrip(), VALID)[0]
    assert "".join(pieces) == final
    assert all(final.startswith(shown) for shown in _shown_states(pieces))


@pytest.mark.parametrize("answer, shown", [
    ("Milvus uses RocksDB [3-1].", "Milvus uses RocksDB."),  # a backwards range: no number at all
    ("Shards split data [2] [0].", "Shards split data [2]."),
    ("It uses RocksDB [2-2].", "It uses RocksDB [2]."),  # a range of one: source 2
])
def test_a_marker_with_no_number_leaves_no_trace(answer, shown):
    text, cited, dropped = clean_citations(answer, VALID)
    assert text == shown and "\x00" not in text
    assert "".join(_stream(answer, list(range(len(answer))))) == shown
