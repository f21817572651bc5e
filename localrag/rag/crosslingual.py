"""A question asked in one language about documents written mostly in another.

The offline embedder (all-MiniLM-L6-v2) maps a Chinese question and the English passage that
answers it far apart, and BM25 shares no word between them: asked "Milvus 2.4 的一个集群里最多
可以创建多少个 database？" over the milvus-docs KB (39 Chinese files, 272 English), retrieval finds
Chinese pages about databases, none with the limit, and the 1.5B invents one. The loaded model
can write the question in the documents' language in a second or two; searching with that too
reaches the English passage.

Only where it can pay: the question's language is a minority of the KB's files, and it is the
first question of a conversation (a follow-up keeps the model's cache for the conversation,
which a second prompt in between would evict).
"""

from __future__ import annotations

import re

from localrag.lang import CJK_LETTER

# Below this share of the KB's files in the question's language, its documents are mostly in the
# other one: a 50/50 KB is searched in the question's language only.
MINORITY = 0.5
MAX_TOKENS = 64  # a question, not an essay: more means the model is answering, not translating

ASK = {
    "en": "Translate this question into English. Reply with the English question only, nothing else.\n\n{q}",
    "zh": "把下面这个问题翻译成中文。只回复翻译后的问题，不要写别的。\n\n{q}",
}
_LABEL = re.compile(r"^\s*(?:translation|english|translated question|question|翻译|译文|问题)\s*[:：]\s*", re.IGNORECASE)


def target_language(question_lang: str, cjk_share: float) -> str | None:
    """The language to search in as well, or None when the question's own is the KB's main one."""
    own_share = cjk_share if question_lang == "zh" else 1.0 - cjk_share
    if own_share >= MINORITY:
        return None
    return "en" if question_lang == "zh" else "zh"


def messages(question: str, target: str) -> list[dict]:
    return [{"role": "user", "content": ASK[target].format(q=question.strip())}]


def clean(reply: str, question: str, target: str) -> str | None:
    """The rendered question from the model's reply, or None when the reply is not one (empty,
    in the wrong language, or much longer than the question: an answer, not a translation)."""
    lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    text = _LABEL.sub("", lines[0]).strip().strip("\"'“”‘’「」`").strip()
    cjk = len(CJK_LETTER.findall(text))
    in_target = cjk >= 2 if target == "zh" else cjk == 0
    if not text or not in_target or len(text) > 3 * len(question) + 40 or text == question.strip():
        return None
    return text
