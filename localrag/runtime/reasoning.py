"""Split a streaming R1 reply into its thinking and its answer, chunk by chunk.

The R1 distills think inside ``<think>...</think>`` and then answer. The engine forces the
opening tag into the prompt, so the reply usually *starts* inside the thinking with no opening
tag; other models answer straight away, some emit an empty ``<think>\\n\\n</think>``, and a
model may stop (or be stopped) before it closes its thinking. Text arrives in arbitrary pieces,
so a tag can be split across chunks ("</thi" + "nk>"): the splitter holds back only the shortest
tail that could still become a tag, so everything else reaches the user at once.

Whitespace that only pads the tags (the newline after ``<think>``, the blank line after
``</think>``, trailing blanks before a tag or the end) is dropped; whitespace inside the text is
kept exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
# What the engine feeds the model to end its thinking when the reasoning budget runs out.
FORCED_CLOSE = "\n</think>\n\n"

THINKING = "thinking"
ANSWER = "answer"

# States. "start" means nothing but whitespace has been seen and the reply may still open
# with <think>; it leaves that state as soon as anything else arrives.
_START, _THINKING, _ANSWER = "start", "thinking", "answer"


@dataclass(frozen=True)
class Piece:
    kind: str  # THINKING or ANSWER
    text: str


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    # Only the last len(tag)-1 characters can matter; the tag starts with '<' so look for it.
    start = text.rfind("<", max(0, len(text) - len(tag) + 1))
    while start != -1:
        tail = text[start:]
        if tag.startswith(tail):
            return len(tail)
        start = text.rfind("<", max(0, len(text) - len(tag) + 1), start)
    return 0


def _split_trailing_space(text: str) -> tuple[str, str]:
    stripped = text.rstrip()
    return stripped, text[len(stripped) :]


class ReasoningSplitter:
    """Feed text as it is generated; get back thinking and answer pieces in order.

    ``started_in_thinking``: the prompt already opened the thinking (R1 with a forced
    ``<think>\\n``); otherwise the reply is an answer unless it itself starts with ``<think>``.
    """

    def __init__(self, *, started_in_thinking: bool) -> None:
        self._state = _START
        self._opened = started_in_thinking  # inside <think> once the leading blanks are past
        self._pending = ""  # held back: a possible partial tag and/or trailing whitespace
        self._emitted_in_state = False  # no leading whitespace is emitted for a new section
        self.thinking_closed = False  # a </think> was seen (or forced)
        self.saw_thinking = started_in_thinking

    @property
    def in_thinking(self) -> bool:
        """True while the generated text still counts against the reasoning budget."""
        if self._state == _START:
            return self._opened
        return self._state == _THINKING

    def feed(self, text: str) -> list[Piece]:
        if not text:
            return []
        # Fast path: most tokens carry no tag character and no trailing blank.
        if (
            not self._pending
            and self._emitted_in_state
            and self._state != _START
            and "<" not in text
            and not text[-1].isspace()
        ):
            return [Piece(self._kind(), text)]
        self._pending += text
        return self._drain(final=False)

    def close_thinking(self) -> list[Piece]:
        """End the thinking now (the budget ran out); what was held back is thinking."""
        out: list[Piece] = []
        if self.in_thinking:
            held = self._pending
            self._pending = ""
            text, _ = _split_trailing_space(held)
            if not self._emitted_in_state:
                text = text.lstrip()
            if text:
                out.append(Piece(THINKING, text))
            self._enter(_ANSWER)
            self.thinking_closed = True
        return out

    def finish(self) -> list[Piece]:
        """The stream ended: release what was held back (a partial tag is just text)."""
        out = self._drain(final=True)
        text, _ = _split_trailing_space(self._pending)
        if not self._emitted_in_state:
            text = text.lstrip()
        self._pending = ""
        if text:
            out.append(Piece(self._kind(), text))
        return out

    # -- internals ---------------------------------------------------------------------

    def _kind(self) -> str:
        return THINKING if self.in_thinking else ANSWER

    def _enter(self, state: str) -> None:
        self._state = state
        self._emitted_in_state = False

    def _emit(self, out: list[Piece], text: str) -> None:
        if not self._emitted_in_state:
            text = text.lstrip()
        if text:
            out.append(Piece(self._kind(), text))
            self._emitted_in_state = True

    def _drain(self, *, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while True:
            buf = self._pending
            if self._state == _START:
                body = buf.lstrip()
                if not body:
                    return out  # only blanks so far: keep waiting
                if body.startswith(OPEN_TAG):
                    self._pending = body[len(OPEN_TAG) :]
                    self._opened = True
                    self.saw_thinking = True
                    self._enter(_THINKING)
                    continue
                if body.startswith(CLOSE_TAG):
                    # "</think>" with nothing before it: an empty (or untagged) thinking.
                    self._pending = body[len(CLOSE_TAG) :]
                    self.thinking_closed = True
                    self._enter(_ANSWER)
                    continue
                if not final and (OPEN_TAG.startswith(body) or CLOSE_TAG.startswith(body)):
                    return out  # could still become a tag
                self._pending = body
                self._enter(_THINKING if self._opened else _ANSWER)
                continue

            if self._state == _THINKING:
                idx = buf.find(CLOSE_TAG)
                if idx != -1:
                    before, _ = _split_trailing_space(buf[:idx])
                    self._emit(out, before)
                    self._pending = buf[idx + len(CLOSE_TAG) :]
                    self.thinking_closed = True
                    self._enter(_ANSWER)
                    continue
                keep = 0 if final else _partial_tag_suffix(buf, CLOSE_TAG)
                body, tail = buf[: len(buf) - keep], buf[len(buf) - keep :]
                text, blanks = _split_trailing_space(body)
                self._emit(out, text)
                self._pending = blanks + tail
                return out

            # Answer: no more tags are recognised (a literal "<think>" later is text).
            text, blanks = _split_trailing_space(buf)
            self._emit(out, text)
            self._pending = blanks
            return out


def split_text(text: str, *, started_in_thinking: bool) -> tuple[str, str]:
    """Split a complete reply into (thinking, answer)."""
    splitter = ReasoningSplitter(started_in_thinking=started_in_thinking)
    pieces = splitter.feed(text) + splitter.finish()
    thinking = "".join(p.text for p in pieces if p.kind == THINKING)
    answer = "".join(p.text for p in pieces if p.kind == ANSWER)
    return thinking, answer


def strip_thinking(text: str) -> str:
    """An earlier assistant turn as the R1 template sends it back: the answer only."""
    return text.split(CLOSE_TAG)[-1].strip() if CLOSE_TAG in text else text
