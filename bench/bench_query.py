"""Query latency over the dev questions: embed, search (dense + BM25), fuse, total; p50 and p95.

Target (issue 5): p50 total <= 60 ms with the KB open and the embedder loaded (a chat session's
steady state). Uses the KB bench_ingest.py built (default bench/out/ingest-home), or builds one.

    .venv/bin/python bench/bench_query.py [--quick] [--json] [--home DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import OUT_DIR, Target, bench_args, load_check, percentile, report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = REPO.parent / "shared" / "eval" / "milvus-dev.jsonl"
KB = "milvus"


def _extra(p) -> None:
    p.add_argument("--home", type=Path, default=OUT_DIR / "ingest-home", help="LOCALRAG_HOME holding the KB")
    p.add_argument("--kb", default=KB, help="knowledge base name")


def main() -> None:
    args = bench_args("retrieval latency over the dev questions", runs=5, quick_runs=1, extra=_extra)
    os.environ["HF_HUB_OFFLINE"] = "1"
    home = args.home
    if not (home / "kb" / args.kb).is_dir():
        print("no KB yet: running bench_ingest.py first", file=sys.stderr)
        cmd = [sys.executable, str(REPO / "bench" / "bench_ingest.py"), "--home", str(home)] + (["--quick"] if args.quick else [])
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    os.environ["LOCALRAG_HOME"] = str(home)

    from localrag.kb.retrieve import Retriever
    from localrag.settings import load_settings

    settings = load_settings(home=home)
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.quick:
        questions = questions[:10]
    parts = {"embed": [], "search": [], "fuse": [], "total": []}
    first_pass: list[float] = []  # each question asked for the first time in this process
    with Retriever(settings, args.kb) as retriever:
        for q in questions[:5]:  # warm-up: first-call allocations, jieba's dictionary
            retriever.search(q, k=5)
        load = load_check("queries")
        for _ in range(args.runs):
            for q in questions:
                retriever.search(q, k=settings.retrieval.top_k)
                t = retriever.last_timings
                parts["embed"].append(t.embed)
                parts["search"].append(t.search)
                parts["fuse"].append(t.fuse)
                parts["total"].append(t.total)
                if len(parts["total"]) <= len(questions):
                    first_pass.append(t.total)
        chunks = retriever.index.chunk_count()
    rows = [
        {"part": name, "p50 ms": percentile(v, 50) * 1000, "p95 ms": percentile(v, 95) * 1000, "n": len(v)}
        for name, v in parts.items()
    ]
    rows.append(
        {"part": "total, first pass", "p50 ms": percentile(first_pass, 50) * 1000, "p95 ms": percentile(first_pass, 95) * 1000, "n": len(first_pass)}
    )
    p50 = percentile(parts["total"], 50) * 1000
    report(
        "bench_query",
        rows,
        args=args,
        columns=["part", "p50 ms", "p95 ms", "n"],
        targets=[Target("query p50 total", p50, 60, higher_is_better=False, unit=" ms")],
        extra={"questions": len(questions), "chunks": chunks, "candidates": settings.retrieval.candidates},
        title=f"retrieval over {chunks} chunks, {len(questions)} questions x {args.runs} runs",
        load=load,
    )


if __name__ == "__main__":
    main()
