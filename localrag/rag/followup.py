"""Follow-up questions: which ones lean on the previous turn, and what to search for them.

A short or pronoun-led follow-up ("and on Windows?", "how do I enable it?") is searched together
with the previous question. An LLM rewrite would be better in theory, but an R1 distill thinks
before it writes anything: hundreds of tokens, tens of seconds on a CPU.
"""

from __future__ import annotations

import re

from localrag.lang import has_cjk

# --- follow-up rewrite -----------------------------------------------------------------------

_ANAPHORA = re.compile(
    r"\b(it|its|it's|this|these|those|they|them|their|there|he|she|him|her|same|former|latter)\b",
    re.IGNORECASE,
)
_CONNECTIVE = re.compile(r"^\s*(and|but|or|so|then|what about|how about|why|also|ok|okay)\b", re.IGNORECASE)
_ZH_ANAPHORA = re.compile(r"(它|它们|这个|那个|这些|那些|这样|那样|其|他们|该|此|呢)")


def is_followup(question: str) -> bool:
    """A question that leans on the previous one: very short, a connective opener ("and on
    Windows?"), or a short question with a pronoun that points back ("how do I enable it?").
    Long questions stand alone even with a pronoun: they usually carry their own subject."""
    q = question.strip()
    if has_cjk(q):
        return len(q) <= 10 or (len(q) <= 24 and bool(_ZH_ANAPHORA.search(q)))
    words = re.findall(r"\w+", q)
    if len(words) <= 4 or _CONNECTIVE.match(q):
        return True
    return len(words) <= 12 and bool(_ANAPHORA.search(q))


def retrieval_query(question: str, previous: list) -> tuple[str, bool]:
    """(query to search, whether it was rewritten): prepend the previous question to a follow-up."""
    if not previous or not is_followup(question):
        return question, False
    last = previous[-1]
    # Carry the thread back to its last self-contained question, not further.
    base = last.query if last.followup else last.question
    return f"{base} {question}", True
