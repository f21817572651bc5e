"""Ingest of the milvus-docs corpus: where the time goes, against raw sentence-transformers encoding.

Targets (issue 5): a full ingest takes at most 1.25x the time sentence-transformers alone needs to
encode the same texts (so parse, chunk and index add at most a quarter), and re-ingesting the
unchanged corpus takes at most 3 s (measured as a fresh `localrag ingest` process, as a user runs it).

Since KB schema 2 an ingest embeds each chunk and each of its sentences (the vectors retrieval's
sentence-level re-score reads instead of embedding them per query); the raw baseline encodes the
same two sets, and the chunks alone are timed too, so the price of the sentence vectors shows.

    .venv/bin/python bench/bench_ingest.py [--quick] [--json] [--home DIR]

The KB it builds is kept (default bench/out/ingest-home) for bench_query.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import OUT_DIR, Target, bench_args, load_check, measure, report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpora" / "milvus-docs"
EMBEDDER = "all-minilm-l6-v2"
KB = "milvus"


def _extra(p) -> None:
    p.add_argument("--home", type=Path, default=OUT_DIR / "ingest-home", help="LOCALRAG_HOME to build the KB in (wiped first)")
    p.add_argument("--corpus", type=Path, default=CORPUS)


def main() -> None:
    args = bench_args("ingest of milvus-docs vs raw embedding; unchanged re-ingest", runs=3, quick_runs=1, extra=_extra)
    os.environ["HF_HUB_OFFLINE"] = "1"
    corpus = args.corpus / "en" / "faq" if args.quick else args.corpus
    home = args.home
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["LOCALRAG_HOME"] = str(home)

    from localrag.kb import chunk as chunk_mod
    from localrag.kb import files as files_mod
    from localrag.kb import ingest as ingest_mod
    from localrag.kb import parse as parse_mod
    from localrag.runtime.embedder import load_for
    from localrag.settings import load_settings

    settings = load_settings(home=home)
    t0 = time.perf_counter()
    embedder = load_for(settings, EMBEDDER)
    load_s = time.perf_counter() - t0
    embedder.embed_passages(["warm up the model"])

    load = load_check("ingest")
    report_ = ingest_mod.ingest(settings, [corpus], kb=KB, embedder=embedder)
    t = report_.timings

    # the same chunks, encoded by sentence-transformers alone (its own length sorting and batching)
    texts, sentences = [], {}
    for item in files_mod.discover([corpus]):
        if isinstance(item, files_mod.Skipped):
            continue
        try:
            doc = parse_mod.parse_file(item.path)
        except parse_mod.ParseError:
            continue
        budget = max(32, min(settings.chunk.max_tokens, embedder.chunk_budget))
        for c in chunk_mod.chunk_document(doc, item.rel, embedder.count_tokens, budget, settings.chunk.overlap_tokens):
            if c.text.strip():
                texts.append(embedder.passage_text(c.embed_text))
                if settings.retrieval.sentence_pool > 0:
                    sentences.update(dict.fromkeys(embedder.passage_text(x) for x in chunk_mod.split_sentences(c.text)))
    model = embedder._model

    def encode(batch):
        return lambda: model.encode(batch, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)

    raw_chunks = measure(encode(texts), runs=1, warmup=0)
    raw_sentences = measure(encode(list(sentences)), runs=1, warmup=0) if sentences else None
    raw_total = raw_chunks.median + (raw_sentences.median if raw_sentences else 0.0)

    # unchanged re-ingest, as a user runs it: a fresh process each time
    cli = [sys.executable, "-m", "localrag", "ingest", str(corpus), "--kb", KB]
    env = {**os.environ, "LOCALRAG_HOME": str(home)}

    def reingest() -> None:
        r = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True)
        if r.returncode not in (0, 3) or " 0 added" not in r.stdout:
            raise RuntimeError(f"re-ingest failed ({r.returncode}): {r.stdout}{r.stderr}")

    re_cli = measure(reingest, runs=args.runs, warmup=0)
    re_inproc = measure(lambda: ingest_mod.ingest(settings, [corpus], kb=KB), runs=args.runs, warmup=0)

    ratio = report_.elapsed / raw_total
    rows = [
        {"stage": "scan (stat + hash)", "seconds": t["scan"]},
        {"stage": "parse", "seconds": t["parse"]},
        {"stage": "chunk (incl. token counting)", "seconds": t["chunk"]},
        {"stage": "embed", "seconds": t["embed"]},
        {"stage": "index (Milvus Lite writes)", "seconds": t["index"]},
        {"stage": "ingest total (in-process)", "seconds": report_.elapsed},
        {"stage": "raw sentence-transformers encode, same chunks", "seconds": raw_chunks.median},
        {"stage": f"raw encode, their {len(sentences)} distinct sentences", "seconds": raw_sentences.median if raw_sentences else 0.0},
        {"stage": "raw encode, both (the ratio's base)", "seconds": raw_total},
        {"stage": "re-ingest unchanged, in-process (median)", "seconds": re_inproc.median},
        {"stage": "re-ingest unchanged, `localrag ingest` process (median)", "seconds": re_cli.median},
        {"stage": "embedder load (not in the ratio)", "seconds": load_s},
    ]
    counts = report_.summary()
    report(
        "bench_ingest" + ("" if not args.quick else ""),
        rows,
        args=args,
        columns=["stage", "seconds"],
        targets=[
            Target("ingest / raw embedding", ratio, 1.25, higher_is_better=False, unit="x"),
            Target("unchanged re-ingest (CLI)", re_cli.median, 3.0, higher_is_better=False, unit=" s"),
        ],
        extra={
            "corpus": str(corpus),
            "files": counts,
            "chunks": report_.chunks_written,
            "chunks_per_s": report_.chunks_written / report_.elapsed if report_.elapsed else None,
            "chunk_settings": {"max_tokens": settings.chunk.max_tokens, "overlap": settings.chunk.overlap_tokens},
            "embedder": EMBEDDER,
            "reingest_cli": re_cli,
            "reingest_inprocess": re_inproc,
            "raw_encode_chunks": raw_chunks,
            "raw_encode_sentences": raw_sentences,
            "sentences": len(sentences),
            "ingest_over_raw_chunks_only": report_.elapsed / raw_chunks.median,
        },
        title=f"ingest of {corpus.name}: {counts['added']} files, {report_.chunks_written} chunks",
        load=load,
    )


if __name__ == "__main__":
    main()
