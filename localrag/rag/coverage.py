"""Names in a question that no document mentions.

A 1.5B model handed five passages about a neighbouring topic answers from them: asked how to
enable Milvus' GraphQL endpoint, it describes the REST one. A score gate cannot catch this — the
passages *are* close to the question — but one fact can: the word "GraphQL" occurs in no document
of the knowledge base. Saying so in the prompt, and to the user, turns an invented answer into
"the documents do not say" without a second model call.

Only *specific* terms are checked (names, identifiers, acronyms, words with digits): an ordinary
word the question paraphrases ("overwrite" where the docs say "upsert") proves nothing. A term is
unmentioned when one of its word parts (three letters or more) occurs nowhere in the index; a
compound of known words (``tenant_id``) is the user's own name, not a gap in the documents.
"""

from __future__ import annotations

import re
from typing import Callable

# A Latin-script word, identifier or dotted/dashed name, as a question writes it.
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]*[A-Za-z0-9]")
_PART = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_SENTENCE_END = (".", "?", "!", ":", ";", "。", "？", "！", "：")
# Capitalised only because of how questions are written, never a name.
_NOT_NAMES = frozenset(
    "i a an the what which how why when where who whose can could does do did is are was were should "
    "would will may might my our in on if and or yes no please".split()
)
MIN_PART = 3
MAX_TERMS = 6  # a question is short; more candidates than this is prose, not names


def specific_terms(question: str) -> list[str]:
    """Names, identifiers, acronyms and words with digits, in question order, each once."""
    out: list[str] = []
    for m in _WORD.finditer(question):
        word = m.group(0).strip(".-/")
        before = question[: m.start()].rstrip().rstrip("`'\"“‘(")
        starts_sentence = not before or before.endswith(_SENTENCE_END)
        if len(word) < 2 or word.lower() in _NOT_NAMES:
            continue
        specific = (
            any(c.isdigit() for c in word)
            or "_" in word
            or re.search(r"[a-z][A-Z]", word) is not None  # camelCase, GraphQL
            or (word.isupper() and len(word) >= 2)  # CDC, TLS
            or (word[0].isupper() and not starts_sentence)  # a proper name mid-sentence
        )
        if specific and word not in out:
            out.append(word)
    return out[:MAX_TERMS]


def word_parts(term: str) -> list[str]:
    """The parts of a term worth looking up: letters-first runs of at least three characters."""
    return [p for p in _PART.findall(term) if len(p) >= MIN_PART]


def unmentioned(question: str, mentions: Callable[[str], bool]) -> list[str]:
    """The question's specific terms that the documents never mention.

    ``mentions(word)``: whether any document holds the word (any letter case). A lookup that
    fails counts as mentioned: a wrong "never mentioned" would talk the model out of an answer.
    """
    missing: list[str] = []
    for term in specific_terms(question):
        for part in word_parts(term):
            try:
                known = mentions(part)
            except Exception:  # noqa: BLE001 - a hint, never a failure
                known = True
            if not known:
                missing.append(term)
                break
    return missing
