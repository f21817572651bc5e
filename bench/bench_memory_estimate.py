"""localrag's memory estimate (localrag/fit.py) against what llama.cpp really allocates.

For a random-weight GGUF with the exact architecture of a catalogue model (tests/synthgguf.py:
same tensors, quant mix from llama.cpp's own quantizer, R1 tokenizer), load it with
llama-cpp-python at each context, read the buffer sizes llama.cpp logs with verbose=True (model,
KV cache, compute, output), and compare with ``fit.llama_memory`` given only the catalogue's
numbers and the file size. Both attention modes: llama-cpp-python's default (no flash attention)
and flash attention.

"real_model" is the mapped file's tensors (CPU_Mapped). On CPUs where llama.cpp repacks some
tensor types (Q4_K, Q4_0, ... into 8x8 interleaved blocks) it also logs a CPU_REPACK model buffer:
a re-laid-out copy whose mapped originals are never read again and stay only as clean,
reclaimable page cache. The target compares with the memory the model holds on to (mapped
tensors + KV + compute + output); "error_vs_all_buffers" also counts the repack copy, i.e. the
peak right after loading, before the kernel reclaims the originals.

With ``--speed`` it also decodes a few tokens per model to check the CPU bandwidth constant the
choice's speed rule uses (fit.CPU_BW_PER_CORE: bytes of weights streamed per second per core).

    .venv/bin/python bench/bench_memory_estimate.py                  # Qwen-1.5B Q4_K_M at 4k/8k/32k
    .venv/bin/python bench/bench_memory_estimate.py --quick          # 2-layer model of the family
    .venv/bin/python bench/bench_memory_estimate.py --model r1-distill-llama-8b --layers 1
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import REPO_ROOT, Target, bench_args, load_check, report  # noqa: E402

MIB = 1 << 20

# Runs in a child process: one llama.cpp load per context, its log captured per load.
_CHILD = r"""
import contextlib, io, json, sys, time
from llama_cpp import Llama
from localrag.models.fit import parse_llama_log
path, ctxs, fa, speed_tokens = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], sys.argv[3] == "1", int(sys.argv[4])
out = {}
for ctx in ctxs:
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        llm = Llama(path, n_ctx=ctx, n_gpu_layers=0, verbose=True, flash_attn=fa)
    row = parse_llama_log(buf.getvalue())
    with open("/proc/self/status") as fh:  # what the kernel holds: anonymous vs file-backed pages
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                row[line.split(":")[0]] = int(line.split()[1]) * 1024
    if speed_tokens:
        llm.verbose = False
        with contextlib.redirect_stderr(io.StringIO()):
            llm.eval(llm.tokenize(b"Hello"))  # warm: pages in the weights
            t0 = time.perf_counter()
            for _ in range(speed_tokens):
                llm.eval([100])
            row["decode_s"] = time.perf_counter() - t0
            row["decode_tokens"] = speed_tokens
    llm.close()
    out[ctx] = row
print(json.dumps(out))
"""


def measure(path: Path, ctxs: list[int], *, flash_attn: bool, speed_tokens: int = 0) -> dict[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), ",".join(map(str, ctxs)), "1" if flash_attn else "0", str(speed_tokens)],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"llama.cpp load failed:\n{proc.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    def extra(p):
        p.add_argument("--model", default="r1-distill-qwen-1.5b", help="catalogue id (default: %(default)s)")
        p.add_argument("--quant", default="Q4_K_M")
        p.add_argument("--ctx", default="4096,8192,32768", help="comma-separated contexts")
        p.add_argument("--speed", action="store_true", help="also decode tokens to check the CPU bandwidth constant")
        p.add_argument("--layers", type=int, default=None,
                       help="only N layers of the exact dimensions, zero weights at F16 (fast to write; "
                            "checks the KV/compute formulas of a big architecture, e.g. --model r1-distill-llama-8b --layers 1)")

    args = bench_args("memory estimate vs llama.cpp's real buffers", runs=1, quick_runs=1, extra=extra)
    from synthgguf import TINY, make_gguf

    from localrag.models import fit
    from localrag.models.catalogue import load_catalogue

    load = load_check("memory-estimate")
    cat = load_catalogue(REPO_ROOT / "models.toml")
    spec = cat.model(args.model)
    ctxs = [int(x) for x in args.ctx.split(",")]
    if args.quick:
        spec = dataclasses.replace(spec, **TINY)
        path = make_gguf(args.model, args.quant, tiny=True)
    elif args.layers:
        import numpy as np
        import synthgguf

        class Zeros:  # buffer sizes do not depend on the weights; zeros write at disk speed
            def standard_normal(self, shape, dtype=np.float32):
                return np.zeros(shape, dtype=dtype)

        synthgguf.np.random.default_rng = lambda seed=None: Zeros()
        args.quant = "F16"
        spec = dataclasses.replace(spec, n_layers=args.layers)
        path = make_gguf(args.model, "F16", layers=args.layers, directory=synthgguf.cache_dir() / "zeros")
    else:
        path = make_gguf(args.model, args.quant)
    size = path.stat().st_size
    rows, errors = [], []
    speed = None
    for fa in (False, True):
        measured = measure(path, ctxs, flash_attn=fa, speed_tokens=(16 if args.speed and not fa else 0))
        for ctx in ctxs:
            est = fit.llama_memory(spec, args.quant, ctx, 0, size_bytes=size, flash_attn=fa)
            real = measured[ctx]
            real_total = real["model"] + real["kv"] + real["compute"] + real.get("output", 0)
            repack = real.get("repack", 0)
            err = (est.total - real_total) / real_total
            errors.append(abs(err))
            rows.append({
                "ctx": ctx,
                "flash_attn": fa,
                "est_weights_MiB": round(est.weights_cpu / MIB, 1),
                "real_model_MiB": round(real["model"] / MIB, 1),
                "est_kv_MiB": round(est.kv_cpu / MIB, 1),
                "real_kv_MiB": round(real["kv"] / MIB, 1),
                "est_compute_MiB": round(est.compute_cpu / MIB, 1),
                "real_compute_MiB": round(real["compute"] / MIB, 1),
                "est_total_MiB": round(est.total / MIB, 1),
                "real_total_MiB": round(real_total / MIB, 1),
                "error_%": round(100 * err, 1),
                "real_repack_MiB": round(repack / MIB, 1),
                "error_vs_all_buffers_%": round(100 * (est.total - real_total - repack) / (real_total + repack), 1),
                "rss_anon_MiB": round(real.get("RssAnon", 0) / MIB),
                "rss_file_MiB": round(real.get("RssFile", 0) / MIB),
            })
            if "decode_s" in real and speed is None:
                tok_s = real["decode_tokens"] / real["decode_s"]
                streamed = fit.weight_split(spec, args.quant, size).streamed
                speed = {
                    "tok_s": round(tok_s, 2),
                    "bytes_per_token": streamed,
                    "effective_GB_s": round(tok_s * streamed / 1e9, 2),
                    "cores_physical": os.cpu_count(),
                    "model_constant_GB_s_per_core": fit.CPU_BW_PER_CORE / 1e9,
                }
    name = "memory-estimate" if args.model == "r1-distill-qwen-1.5b" and args.quant == "Q4_K_M" else f"memory-estimate-{args.model}-{args.quant}"
    if args.layers:
        name += f"-{args.layers}L"
    report(
        name,
        rows,
        args=args,
        title=f"{spec.name}{' (2-layer)' if args.quick else ''}{f' ({args.layers}-layer, zero weights)' if args.layers else ''} {args.quant}: fit.llama_memory vs llama.cpp ({path.name}, {size / MIB:.1f} MiB)",
        targets=[Target("largest |error| of the estimate", round(100 * max(errors), 1), 10.0, higher_is_better=False, unit="%")],
        extra={"model": spec.id, "quant": args.quant, "file": str(path), "file_bytes": size, "speed": speed},
        load=load,
    )
    if speed:
        print(f"decode: {speed['tok_s']} tok/s x {speed['bytes_per_token'] / 1e9:.2f} GB/token = "
              f"{speed['effective_GB_s']} GB/s effective on {speed['cores_physical']} cores "
              f"(fit assumes {speed['model_constant_GB_s_per_core']} GB/s per core)")


if __name__ == "__main__":
    main()
