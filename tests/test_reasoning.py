"""The thinking/answer splitter on token streams as the R1 distills produce them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from localrag.runtime.reasoning import (
    ANSWER,
    FORCED_CLOSE,
    THINKING,
    ReasoningSplitter,
    split_text,
    strip_thinking,
)

# A reply of R1-Distill-Qwen-1.5B to "What port does Milvus listen on?", as the detokenized pieces
# arrive (the prompt ended with "<｜Assistant｜><think>\n", so there is no opening tag).
R1_STREAM = [
    "Okay", ",", " so", " the", " user", " asks", " about", " the", " port", ".", " The", " source",
    " [", "1", "]", " says", " ", "1", "9", "5", "3", "0", ".\n", "</think>", "\n\n", "Milvus",
    " listens", " on", " port", " **", "1", "9", "5", "3", "0", "**", " [", "1", "]", ".",
]


def run(chunks, *, started_in_thinking=True, close_after=None):
    splitter = ReasoningSplitter(started_in_thinking=started_in_thinking)
    pieces = []
    for i, chunk in enumerate(chunks):
        if close_after is not None and i == close_after:
            pieces += splitter.close_thinking()
        pieces += splitter.feed(chunk)
    pieces += splitter.finish()
    thinking = "".join(p.text for p in pieces if p.kind == THINKING)
    answer = "".join(p.text for p in pieces if p.kind == ANSWER)
    return thinking, answer, pieces, splitter


def test_forced_opening_tag_missing_from_the_reply():
    thinking, answer, pieces, splitter = run(R1_STREAM)
    assert thinking == "Okay, so the user asks about the port. The source [1] says 19530."
    assert answer == "Milvus listens on port **19530** [1]."
    assert splitter.thinking_closed
    # Streaming: thinking pieces all come before answer pieces, and the first piece is
    # released with the first token (nothing is buffered needlessly).
    kinds = [p.kind for p in pieces]
    assert kinds == sorted(kinds, key=lambda k: k != THINKING)
    first = ReasoningSplitter(started_in_thinking=True).feed("Okay")
    assert [p.text for p in first] == ["Okay"]


def test_close_tag_split_across_chunks():
    chunks = ["Let me think", ".", "\n</thi", "nk", ">\n", "\nThe answer", " is 4."]
    thinking, answer, *_ = run(chunks)
    assert thinking == "Let me think."
    assert answer == "The answer is 4."
    # Split into single characters too.
    thinking, answer, *_ = run(list("Hmm.\n</think>\n\nYes."))
    assert (thinking, answer) == ("Hmm.", "Yes.")


def test_a_lone_angle_bracket_is_released_when_it_cannot_be_a_tag():
    splitter = ReasoningSplitter(started_in_thinking=True)
    out = splitter.feed("if a <")
    assert "".join(p.text for p in out) == "if a"
    out = splitter.feed(" b then")
    assert "".join(p.text for p in out) == " < b then"


def test_reply_that_opens_its_own_thinking():
    # A model whose template did not force the tag writes it itself.
    chunks = ["<think>", "\n", "Two", " plus", " two", ".", "\n", "</think>", "\n\n", "4"]
    thinking, answer, _, splitter = run(chunks, started_in_thinking=False)
    assert (thinking, answer) == ("Two plus two.", "4")
    assert splitter.saw_thinking
    # ... and when the prompt forced it as well, a repeated opening tag is not text.
    thinking, answer, *_ = run(chunks, started_in_thinking=True)
    assert (thinking, answer) == ("Two plus two.", "4")


def test_empty_thinking_block():
    for started in (True, False):
        thinking, answer, _, splitter = run(["<think>", "\n\n", "</think>", "\n\n", "Paris", "."], started_in_thinking=started)
        assert (thinking, answer) == ("", "Paris.")
        assert splitter.thinking_closed
    # With the opening tag forced, the model may only close it.
    thinking, answer, *_ = run(["\n\n", "</think>", "\n\n", "Paris", "."])
    assert (thinking, answer) == ("", "Paris.")


def test_no_thinking_at_all():
    # SmolLM2 and other non-reasoning models answer straight away.
    thinking, answer, _, splitter = run(["Hello", "!", " How", " can", " I", " help", "?"], started_in_thinking=False)
    assert (thinking, answer) == ("", "Hello! How can I help?")
    assert not splitter.saw_thinking and not splitter.in_thinking
    # A later literal "<think>" in an answer is text, not a tag.
    _, answer, *_ = run(["Use", " the", " <think>", " tag"], started_in_thinking=False)
    assert answer == "Use the <think> tag"


def test_thinking_that_never_ends():
    chunks = ["Wait", ",", " let", " me", " re", "check", ".", "\n\n", "</th"]
    thinking, answer, _, splitter = run(chunks)
    assert thinking == "Wait, let me recheck.\n\n</th"  # the partial tag was just text
    assert answer == ""
    assert splitter.in_thinking and not splitter.thinking_closed


def test_budget_cut_closes_thinking_and_the_answer_follows():
    # The engine stops after 5 thinking tokens, feeds FORCED_CLOSE to the model and to the
    # splitter via close_thinking(); whatever the model says next is the answer.
    chunks = ["First", ",", " the", " docs", "\n", "</th", "Milvus", " uses", " 19530", "."]
    splitter = ReasoningSplitter(started_in_thinking=True)
    pieces = []
    for chunk in chunks[:5]:
        pieces += splitter.feed(chunk)
        assert splitter.in_thinking
    pieces += splitter.close_thinking()
    assert not splitter.in_thinking and splitter.thinking_closed
    for chunk in chunks[6:]:
        pieces += splitter.feed(chunk)
    pieces += splitter.finish()
    thinking = "".join(p.text for p in pieces if p.kind == THINKING)
    answer = "".join(p.text for p in pieces if p.kind == ANSWER)
    assert thinking == "First, the docs"
    assert answer == "Milvus uses 19530."
    assert FORCED_CLOSE.strip() == "</think>"


def test_budget_cut_with_a_partial_tag_held_back():
    thinking, answer, *_ = run(["Hmm", " <", "/th", "Yes"], close_after=3)
    assert thinking == "Hmm </th"
    assert answer == "Yes"


def test_whitespace_inside_text_is_kept():
    thinking, answer = split_text("a\n\n  b\n</think>\n\nline 1\n\n    code\nend\n\n", started_in_thinking=True)
    assert thinking == "a\n\n  b"
    assert answer == "line 1\n\n    code\nend"


def test_strip_thinking_for_history():
    assert strip_thinking("<think>\nx\n</think>\n\nThe answer.") == "The answer."
    assert strip_thinking("Plain answer.") == "Plain answer."


texts = st.lists(
    st.sampled_from(["<think>", "</think>", "<", "/", "think", ">", "\n", " ", "a", "b c", "中文", "</th", "ink>"]),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12), started=st.booleans())
def test_any_chunking_gives_the_same_split(text, cuts, started):
    whole = split_text(text, started_in_thinking=started)
    points = sorted({c for c in cuts if c < len(text)})
    chunks = [text[a:b] for a, b in zip([0] + points, points + [len(text)])]
    thinking, answer, *_ = run(chunks, started_in_thinking=started)
    assert (thinking, answer) == whole
