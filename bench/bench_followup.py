"""Chat follow-up: time to first token with the KV prefix reused vs read again from scratch.

The chat keeps each earlier user turn verbatim (sources included) and each answer without its
reasoning, so a follow-up's prompt starts with the previous prompt token for token and the
engine only reads what is new (the previous answer and the new turn). This measures that on an
exact-architecture DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M with random weights (tests/synthgguf.py:
speed depends on the architecture and quant mix, not on the weights) and a realistic RAG prompt:
five sources from the Milvus docs for the first question, three new ones for the follow-up, the
same packing and instructions as ``localrag chat``.

It also times what an LLM rewrite of the follow-up would cost (an R1 distill thinks before it
writes a query), the alternative to the cheap "prepend the previous question" rewrite.

    .venv/bin/python bench/bench_followup.py [--quick] [--runs N] [--json]
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import SHARED_DIR, Target, bench_args, load_check, report, stats  # noqa: E402

from localrag.rag import prompt  # noqa: E402

FIRST_Q = "How does Milvus store data, and where do the vectors end up after an insert?"
FOLLOW_Q = "and why are searches slower right after that?"
ANSWER_1 = (
    "Milvus keeps metadata in etcd and the data itself in object storage: inserted rows, vectors "
    "included, are written as incremental logs to MinIO, S3 or another backend [1][2]. Growing "
    "segments are sealed once they reach a size threshold and are then indexed [3]. So etcd never "
    "holds your vectors; an etcdctl listing only shows module metadata [2]."
)


@dataclass
class Passage:  # the fields prompt.pack_sources reads from a retrieve.Hit
    text: str
    source: str
    page: int | None
    heading: str
    chunk_id: str
    score: float = 1.0


def passages(path: Path, want: int, words: int = 170) -> list[Passage]:
    """Heading-led paragraphs of a real document, about chunk size (~256 tokens)."""
    text = path.read_text(encoding="utf-8")
    out, heading, buf = [], "", []
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
        buf.append(line)
        if sum(len(b.split()) for b in buf) >= words:
            out.append(Passage("\n".join(buf).strip(), path.name, None, heading, f"{path.name}:{len(out)}"))
            buf = []
        if len(out) >= want:
            break
    return out


def corpus() -> tuple[list[Passage], list[Passage]]:
    docs = SHARED_DIR / "corpora" / "milvus-docs" / "en" / "faq"
    first = passages(docs / "product_faq.md", 5)
    follow = passages(docs / "performance_faq.md", 3)
    if len(first) < 5 or len(follow) < 3:
        sys.exit(f"not enough text under {docs}")
    return first, follow


def ttft(engine, messages, **kw) -> tuple[float, object]:
    """Seconds to the first generated token (from the engine's stats), reading 1 token only."""
    stats_ = None
    for ev in engine.stream(messages, max_tokens=1, reasoning_budget=1, temperature=0.6, top_p=0.95, seed=1, **kw):
        if ev.kind == "done":
            stats_ = ev.stats
    return stats_.ttft_s, stats_


def main() -> None:
    args = bench_args("chat follow-up TTFT with KV prefix reuse vs without", runs=3, quick_runs=1)
    from localrag.runtime.engine import Engine
    from tests.synthgguf import make_gguf

    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=args.quick)
    engine = Engine.load(path, n_ctx=8192, template="r1")
    count = engine.count_tokens
    first_hits, follow_hits = corpus()

    pack1 = prompt.pack_sources(first_hits, count, 4000)
    turn1 = prompt.user_turn(FIRST_Q, pack1)
    # A follow-up usually brings back one earlier source too: it is named, not repeated.
    pack2 = prompt.pack_sources([first_hits[0], *follow_hits], count, 4000, first_n=len(pack1.sources) + 1,
                                earlier=pack1.sources)
    turn2 = prompt.user_turn(FOLLOW_Q, pack2, followup=True)
    msgs1 = prompt.messages_for([], turn1)
    msgs2 = prompt.messages_for([(turn1, ANSWER_1)], turn2)
    n1, n2 = len(engine.format_prompt(msgs1)), len(engine.format_prompt(msgs2))

    load = load_check("bench_followup")
    with_reuse, without, cached, decode = [], [], [], []
    for run in range(args.runs):
        order = ("with", "without") if run % 2 == 0 else ("without", "with")
        for mode in order:
            engine.llm.reset()  # an empty KV cache
            if mode == "with":
                # The first question as the chat asks it: read, think a little, answer a little.
                for ev in engine.stream(msgs1, max_tokens=24, reasoning_budget=48, temperature=0.6, top_p=0.95, seed=run):
                    if ev.kind == "done":
                        decode.append(ev.stats.decode_tps)
                t, st = ttft(engine, msgs2)
                with_reuse.append(t)
                cached.append(st.cached_tokens)
            else:
                t, st = ttft(engine, msgs2)
                without.append(t)
        print(f"run {run + 1}/{args.runs}: with {with_reuse[-1]:.2f} s, without {without[-1]:.2f} s", file=sys.stderr)

    s_with, s_without = stats(with_reuse), stats(without)
    ratio = s_with.median / s_without.median

    # What an LLM rewrite of the follow-up would cost: a short prompt, the distill's thinking
    # (a brief think is ~200 tokens), then a one-line query.
    rewrite_s = None
    think_tokens = 64 if args.quick else 200
    engine.llm.reset()
    rewrite_msgs = prompt.messages_for([], (
        "Rewrite the last question so it can be understood without the conversation. Reply with the "
        f"question only.\n\nEarlier question: {FIRST_Q}\nLast question: {FOLLOW_Q}"
    ))
    t0 = time.perf_counter()
    for ev in engine.stream(rewrite_msgs, max_tokens=24, reasoning_budget=think_tokens, temperature=0.6, top_p=0.95, seed=7):
        pass
    rewrite_s = time.perf_counter() - t0
    engine.close()

    rows = [
        {"case": "follow-up, KV prefix reused", "prompt_tokens": n2, "cached_tokens": int(stats(cached).median),
         "ttft_s": s_with.fmt(2)},
        {"case": "follow-up, read from scratch", "prompt_tokens": n2, "cached_tokens": 0, "ttft_s": s_without.fmt(2)},
        {"case": "first question (for scale)", "prompt_tokens": n1, "cached_tokens": 0, "ttft_s": "-"},
        {"case": f"LLM rewrite instead ({think_tokens} think + 24 tokens)", "prompt_tokens": "-",
         "cached_tokens": "-", "ttft_s": f"{rewrite_s:.1f} (total)"},
    ]
    report(
        "followup",
        rows,
        args=args,
        columns=["case", "prompt_tokens", "cached_tokens", "ttft_s"],
        title=f"chat follow-up TTFT, {path.name} ({'tiny, --quick' if args.quick else 'exact 1.5B'}), median (min-max) s",
        targets=[Target("follow-up TTFT reused / scratch", ratio, 0.5, higher_is_better=False, unit="x")],
        extra={
            "model_file": path.name,
            "ttft_with_s": s_with.as_dict(),
            "ttft_without_s": s_without.as_dict(),
            "ratio": ratio,
            "prompt_tokens_first": n1,
            "prompt_tokens_followup": n2,
            "sources_first": len(pack1.sources),
            "sources_followup_new": len(pack2.sources),
            "decode_tok_s": stats(decode).median if decode else None,
            "llm_rewrite_s": rewrite_s,
            "llm_rewrite_think_tokens": think_tokens,
        },
        load=load,
    )


if __name__ == "__main__":
    main()
