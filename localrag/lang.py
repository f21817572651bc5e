"""Which writing system a text is in: the one definition of "CJK" every stage uses.

Letters are the ideographs (CJK Unified, Extension A, Compatibility), kana and hangul; their
punctuation (ideographic space, 。、「」, full-width forms) is a separate class, because some
decisions count it (is this byte string mostly Chinese?) and others must not (is this question
in Chinese?).
"""

from __future__ import annotations

import re

IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
KANA_HANGUL = "\u3040-\u30ff\uac00-\ud7af"
CJK_PUNCTUATION = "\u3000-\u303f\uff00-\uffef"

CJK_LETTER = re.compile(f"[{IDEOGRAPHS}{KANA_HANGUL}]")
CJK_TEXT = re.compile(f"[{IDEOGRAPHS}{KANA_HANGUL}{CJK_PUNCTUATION}]")
_WORDISH = re.compile(r"[^\W\d_]")


def has_cjk(text: str) -> bool:
    return CJK_LETTER.search(text) is not None


def is_cjk(text: str, threshold: float = 0.3) -> bool:
    """Mostly CJK text, counting a CJK character like a word and four other letters as one
    (so a Chinese page full of English identifiers still counts as Chinese)."""
    sample = text[:2000]
    cjk = len(CJK_LETTER.findall(sample))
    other = len(_WORDISH.findall(sample)) - cjk
    return cjk > 0 and cjk / (cjk + other / 4) >= threshold
