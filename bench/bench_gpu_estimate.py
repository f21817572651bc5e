"""Memory estimate vs what a CUDA build of llama.cpp allocates on a real GPU (optional extra).

Runs only where a GPU and a CUDA build of llama-cpp-python exist (the lent accelerator machine,
see BENCHMARKS.md for the exact run). For the exact R1-Distill-Qwen-1.5B architecture (random
weights, quantized by llama.cpp) fully offloaded at several contexts, it compares fit.llama_memory's
per-device estimate with the buffer sizes llama.cpp logs, and prints localrag's hardware detection
and choice for the real machine.

    python bench/bench_gpu_estimate.py [--model r1-distill-qwen-1.5b] [--quant Q4_K_M] [--ctx 4096 8192 32768]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MiB = 1024 * 1024


def gpu_used() -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
    finally:
        pynvml.nvmlShutdown()


def measure(path: Path, ctx: int) -> int:
    """GPU memory a fully offloaded load takes, read from NVML around it.

    llama.cpp's own buffer log would be finer, but its verbose model print crashed this CUDA
    build (segfault in print_info); NVML sees every allocation, which is what a user budgets.
    """
    import gc

    import llama_cpp

    before = gpu_used()
    llm = llama_cpp.Llama(str(path), n_ctx=ctx, n_gpu_layers=-1, verbose=False)
    llm.eval(llm.tokenize(b"warm up the compute graph " * 20))
    after = gpu_used()
    llm.close()
    del llm
    gc.collect()
    return after - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="r1-distill-qwen-1.5b")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, nargs="+", default=[4096, 8192, 32768])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import llama_cpp

    from localrag.models import fit
    from localrag.models import hardware
    from localrag.models.catalogue import load_catalogue
    from localrag.settings import REPO_ROOT
    from tests import synthgguf

    if not llama_cpp.llama_supports_gpu_offload():
        sys.exit("this llama-cpp-python build cannot offload to a GPU: nothing to measure here")
    cat = load_catalogue(REPO_ROOT / "models.toml")
    spec = cat.model(args.model)
    path = synthgguf.make_gguf(args.model, args.quant)
    size = path.stat().st_size
    hw = hardware.detect(Path(tempfile.gettempdir()))

    measure(path, 512)  # the first load also creates the CUDA context: keep it out of the figures
    rows = []
    for ctx in args.ctx:
        gpu_actual = measure(path, ctx)
        est = fit.llama_memory(spec, args.quant, ctx, n_gpu_layers=spec.n_layers + 1, size_bytes=size)
        rows.append(
            {
                "ctx": ctx,
                "gpu_actual": gpu_actual,
                "gpu_estimate": est.gpu,
                "ratio": round(est.gpu / gpu_actual, 4) if gpu_actual else None,
                "estimate_by_kind": {"model": est.weights_gpu, "kv": est.kv_gpu, "compute": est.compute_gpu},
            }
        )
        print(f"ctx {ctx:>6}: GPU actual {gpu_actual / MiB:8.1f} MiB  estimate {est.gpu / MiB:8.1f} MiB  "
              f"ratio {rows[-1]['ratio']}")

    plan = fit.plan(cat, hw)
    result = {
        "gpu": [g.__dict__ for g in hw.gpus],
        "gpu_offload_supported": hw.gpu_offload_supported,
        "model": args.model,
        "quant": args.quant,
        "file_bytes": size,
        "rows": rows,
        "choice": None if plan.choice is None else {
            "model": plan.choice.model, "quant": plan.choice.quant, "fit": plan.choice.fit,
            "n_gpu_layers": plan.choice.n_gpu_layers, "ctx": plan.choice.ctx,
        },
        "reason": plan.reason,
    }
    print(json.dumps(result, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
