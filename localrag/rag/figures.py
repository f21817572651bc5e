"""Figures an answer states that no source holds.

Asked for a value the documents never give ("how long until PyMilvus recycles an idle
connection?"), a 1.5B answers from the nearest passage and makes the number up: "30 分钟 [3]",
with a citation. Nothing in the question is missing from the knowledge base (rag/coverage.py
cannot help), and the passages are close to the question (no score gate can help). But the
figure itself can be checked: a number that occurs in neither the question nor any source the
model was given cannot have come from the documents.

Measured on five full dev-set runs with the real 1.5B (BENCHMARKS §11): of 275 answers to
answerable questions, 3 stated such a figure and all 3 were wrong; of the unanswerable ones it
caught the invented "30 分钟" twice and "5 分钟" once. So a sentence that states one is withheld,
and the reader is told which figure and why; an answer left with nothing else says the documents
do not say.

Only what is checkable is checked, outside code (values in example code are illustrations, not
claims): numbers of two or more digits (or with a decimal point), and a single digit with a unit
("5 分钟", "5%"). A bare single digit is too often a count the sources write in words. A number
written with a unit ("10 分钟", "64 MB") is grounded only where a source gives that number near
a unit of the same kind (in any spelling: "100 ms" by "100 milliseconds", "30 minutes" by
"30m"): every source holds some 10, and an invented "10 分钟" for the idle-connection question
went through on a `range(10)` in an example (dev set, run M; of the 110 answers of runs L and M,
the other ten figures with units were all grounded this way too). The reader is told the figure
with its unit.
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple

from localrag.lang import has_cjk
from localrag.rag import answer_text

# A number as prose writes it: "30", "2.4", "1,024", "16GB" (the unit is not part of it), not a
# digit inside a word or identifier ("v2", "md5", "gpt-4o").
# A comma only groups thousands: "steps 1,2 and 3" states no figure "1,2".
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])(?<![A-Za-z_]-)\d+(?:,\d{3})*(?:\.\d+)*(?!\d)")
_DIGIT_GROUPS = re.compile(r"(?<=\d)[,\s](?=\d{3}\b)")

# The units that make a single digit a claim, by kind: "5 min" is grounded by "five minutes".
_UNITS = {
    "time": r"分钟|秒钟?|小时|天|毫秒|微秒|ms|µs|ns|s|secs?|seconds?|milliseconds?|microseconds?|nanoseconds?|"
            r"m|mins?|minutes?|h|hrs?|hours?|d|days?|weeks?",
    "size": r"[KMGT]i?B|[KMGT]|字节|bytes?|(?:kilo|mega|giga|tera)bytes?",
    "share": r"%|percent",
    "times": r"倍|times|x|×|fold",
}
_UNIT_AFTER = re.compile(r"\s?(" + "|".join(_UNITS.values()) + r")(?![A-Za-z])", re.IGNORECASE)
# How far from a number (characters, either side) a source may write its unit: a sentence, or a
# table row whose header or description carries it.
_UNIT_REACH = 200
_WORDS = ["zero|零", "one|一", "two|二|两", "three|三", "four|四", "five|五", "six|六", "seven|七", "eight|八",
          "nine|九"]

# "This is stated in [2].", "For more, see [3].", "这个信息来自 [2][3]。" — where, not what.
# "According to [2]." says where; "According to the PACELC theorem, latency grows." is a claim.
_POINTER = re.compile(
    r"^(?:this|that|it|these|the (?:above |same )?(?:information|answer|value|figure|details?))\b.{0,40}?"
    r"\b(?:is|are|was|can be|comes?|taken)\b.{0,30}?\b(?:stated|specified|mentioned|found|described|given|"
    r"provided|from|in|based)\b"
    r"|^according to\b(?!.*[,，:：]\s*\w)"
    r"|^(?:see|refer to|for (?:more|details))\b"
    r"|^(?:这个|这一|该|以上|上述|此)?(?:信息|内容|数据|数字|说法)?(?:可以)?(?:来自|参考|参见|见|出自|从)",
    re.IGNORECASE,
)

# Markers with what separates them ("[1], [2]", "[1] and [2]"): gone before a sentence is read as a
# pointer, so "According to [1], [2]." is one.
_CITE = answer_text.CITATION.pattern
_MARKER_RUN = re.compile(rf"{_CITE}(?:[^\S\n]*(?:[,，]|and\b)?[^\S\n]*{_CITE})*")

# A question that asks for a quantity: "how many", "how long", "the maximum …", "多久", "最多…".
# A superlative asks for one only outside "which …" ("Which index has the lowest latency?"), and
# "最大的" is "the biggest" of anything ("最大的区别是什么").
_ASKS_FIGURE = re.compile(
    r"\bhow (?:many|much|long|large|big|often|far|old|fast)\b|\b(?:maximum|minimum)\b"
    r"|多少|多久|多长|多大|多快|(?<!哪)几个|几次|几秒|几天|几分钟|几小时|上限|下限|最多|最少|最[大小长短](?!的)",
    re.IGNORECASE,
)
_SUPERLATIVE = re.compile(r"\b(?:largest|smallest|highest|lowest|longest|shortest)\b", re.IGNORECASE)
_WHICH = re.compile(r"\bwhich\b|哪(?!几)", re.IGNORECASE)
# A number however an answer may write it: digits (also in inline code, "`max_tasks: 16`") or words.
_ANY_NUMBER = re.compile(
    r"\d|\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty|thirty|"
    r"forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|billion)\b|[零一二两三四五六七八九十百千万亿]",
    re.IGNORECASE,
)

WITHHELD_ALL = {
    "en": "The documents do not say. The answer the model wrote stated {figures}, which appears in none "
          "of the sources, so it is not shown.",
    "zh": "文档中没有说明。模型写出的回答给出了{figures}，但所给来源中都没有这个数字，因此不予显示。",
}
# A quantity question answered with no figure and nothing a source holds (session._final)
NO_FIGURE = {
    "en": "The documents do not say. The answer the model wrote gave no figure, and what it said instead "
          "is in none of the sources, so it is not shown.",
    "zh": "文档中没有说明。模型写出的回答没有给出数字，其余的说法在所给来源中也都没有，因此不予显示。",
}
WITHHELD_SOME = {
    "en": "(Left out: a sentence that stated {figures}, which appears in none of the sources.)",
    "zh": "（已略去一句：其中的{figures}在所给来源中都没有出现。）",
}


def _plain(text: str) -> str:
    """Digit groups joined ("1,024" → "1024") so a figure is found however it is grouped."""
    return _DIGIT_GROUPS.sub("", text)


class _Figure(NamedTuple):
    number: str  # digit groups joined: "1024", "2.5"
    unit: str  # as written after it ("分钟", "GB", "%"), or ""
    written: str = ""  # the number as the text writes it ("1,024"), when it differs

    @property
    def shown(self) -> str:
        """As the reader is told of it: "10 分钟", "16 GB", "5%", "2x", "512"."""
        return self._with_unit(self.number)

    @property
    def as_written(self) -> str:
        """``shown`` with the number's own digit groups: "16,384", "1,024 MB"."""
        return self._with_unit(self.written or self.number)

    def _with_unit(self, number: str) -> str:
        if not self.unit:
            return number
        spaced = len(self.unit) > 1 and self.unit[0].isalpha() or has_cjk(self.unit)
        return number + (" " if spaced else "") + self.unit


def figures(text: str) -> list[str]:
    """The checkable figures a piece of prose states, in order, each once, with the unit written
    after them: numbers of two digits or more, and a single digit with a unit ("5 分钟", "5%": a
    duration, size or share is a claim; a bare "2" is too often a count the sources write in
    words)."""
    return list(dict.fromkeys(f.shown for f in _stated(text)))


def _stated(text: str) -> list[_Figure]:
    prose = answer_text.CITATION.sub(" ", answer_text.CODE.sub(" ", text))
    out: list[_Figure] = []
    for m in _NUMBER.finditer(prose):
        written = m.group(0).rstrip(".,")
        number = _plain(written)
        unit = _UNIT_AFTER.match(prose, m.end())
        if unit is None and len(re.sub(r"\D", "", number)) < 2:
            continue
        figure = _Figure(number, unit.group(1) if unit else "", written if written != number else "")
        if all((f.number, f.unit) != (figure.number, figure.unit) for f in out):  # however it is grouped
            out.append(figure)
    return out


def _kinds(unit: str) -> list[str]:
    """The kinds a unit can be ("m" is minutes or mega); none for a figure without one."""
    return [k for k, units in _UNITS.items() if unit and re.fullmatch(units, unit, re.IGNORECASE)]


def _unit_of(kinds: list[str]) -> str:
    return "|".join(_UNITS[k] for k in kinds)


def _near_unit(number: str, kinds: list[str], ground: str) -> bool:
    """``number`` occurs in ``ground`` with a unit of its kind close by: "10 分钟" needs a source
    that gives 10 of some duration, not any source where a 10 occurs (a loop's range(10)). Close
    by rather than right after, so a table's "Timeout (s) | … | 10" row still grounds it."""
    unit = re.compile(rf"(?<![A-Za-z])(?:{_unit_of(kinds)})(?![A-Za-z])", re.IGNORECASE)
    for m in _whole(number).finditer(ground):
        if unit.search(ground, max(0, m.start() - _UNIT_REACH), m.end() + _UNIT_REACH):
            return True
    return False


def _grounded(figure: _Figure, ground: str) -> bool:
    kinds = _kinds(figure.unit)
    if len(re.sub(r"\D", "", figure.number)) >= 2:
        if not _whole(figure.number).search(ground):
            return False
        return not kinds or _near_unit(figure.number, kinds, ground)
    return single_digit(figure).search(ground) is not None


def _whole(number: str) -> re.Pattern:
    """``number`` as a whole figure: "10" is not in "110", "0.10" or "10.5" (a source's 10.5
    does not state 10); a version's "2.4" is in "2.4.1"."""
    after = r"(?!\d)" if "." in number else r"(?!\.?\d)"
    return re.compile(rf"(?<![\d.]){re.escape(number)}{after}")


def single_digit(figure: _Figure) -> re.Pattern:
    """Where a single-digit figure with a unit counts: that digit (or its word) right before a
    unit of its kind ("5 分钟" by "five minutes")."""
    digit = figure.number[0]
    value = f"(?:{digit}|{_WORDS[int(digit)]})"
    return re.compile(rf"(?<![\d.]){value}\s*(?:{_unit_of(_kinds(figure.unit))})(?![A-Za-z])", re.IGNORECASE)


def unsupported(text: str, grounds: Iterable[str]) -> list[str]:
    """Figures of ``text`` (as ``figures`` shows them) that occur in none of ``grounds`` (the
    sources and the question)."""
    ground = _plain(" ".join(grounds))
    return list(dict.fromkeys(f.shown for f in _stated(text) if not _grounded(f, ground)))


def is_pointer(unit: str) -> bool:
    """A sentence that only says where the previous one came from ("This is stated in [2].")."""
    bare = _MARKER_RUN.sub("", unit).strip()
    return len(bare) <= 120 and bool(_POINTER.search(bare)) and not figures(bare)


def asks_for_figure(question: str) -> bool:
    """The question asks for a quantity ("How many shards …?", "空闲连接默认多久…？")."""
    if _ASKS_FIGURE.search(question):
        return True
    return bool(_SUPERLATIVE.search(question)) and not _WHICH.search(question)


def _states_number(unit: str) -> bool:
    """Any number, in digits or words, outside citations and code blocks: an answer that still
    gives one is kept, whether or not the check can judge it."""
    return bool(_ANY_NUMBER.search(answer_text.CITATION.sub(" ", answer_text.FENCED.sub(" ", unit))))


# "There is no limit" answers a quantity question as a number does
_NO_LIMIT = re.compile(
    r"\b(?:no|without(?: a| any)?) (?:\w+ )?(?:limits?|maximum|cap|upper bound)\b|\bnot limited\b|\bunlimited\b"
    r"|不限|不受限|没有(?:\w{0,4}的)?(?:限制|上限)|无(?:限制|上限)|无限",
    re.IGNORECASE,
)


def gives_figure(answer: str) -> bool:
    """The answer states a number somewhere (``_states_number``) or says there is no limit."""
    return _states_number(answer) or bool(_NO_LIMIT.search(answer))


def withhold(answer: str, grounds: Iterable[str], lang: str, asks_figure: bool = False) -> tuple[str, list[str]]:
    """The answer without its sentences that state an unsupported figure, and those figures.

    The answer comes back unchanged with ``[]`` when every figure is grounded. A sentence that
    only points at the sources for a withheld one goes with it. When nothing of substance is
    left, the answer becomes "the documents do not say", naming the figure; so it does when the
    question asked for a quantity (``asks_figure``) and no sentence left states a number: the
    figure asked for was the invented one, and what is left talks around it ("it depends on
    the resources available", "可以通过参数来配置")."""
    ground = list(grounds)
    kept, withheld = [], []
    dropping = False  # the previous sentence was withheld: a pointer right after it goes too
    for unit in answer_text.claim_units(answer):  # a sentence goes with the markers after it
        bad = unsupported(unit, ground)
        if bad:
            withheld.extend(n for n in bad if n not in withheld)
            dropping = True
        elif not (dropping and is_pointer(unit)):
            kept.append(unit)
            dropping = dropping and not unit.strip()
    if not withheld:
        return answer, []
    quoted = "、".join(f"“{n}”" for n in withheld) if lang == "zh" else " and ".join(f'"{n}"' for n in withheld)
    substance = [u for u in kept if not is_pointer(u) and answer_text.CITATION.sub("", u).strip(" \n.:：。-*")]
    if not substance or asks_figure and not any(_states_number(u) for u in substance):
        return WITHHELD_ALL[lang].format(figures=quoted), withheld
    return "".join(kept).strip() + "\n\n" + WITHHELD_SOME[lang].format(figures=quoted), withheld
