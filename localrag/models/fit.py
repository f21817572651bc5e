"""Will it fit, and which model should this machine run?

Memory is estimated the way llama.cpp allocates it (checked against llama.cpp's own buffer logs in
``bench/bench_memory_estimate.py`` and tests/test_fit.py):

* weights: the GGUF's size, split into the token embedding (always kept in system RAM by
  llama.cpp), the output projection (offloaded only with the last "layer"), and equal
  repeating layers, so a partial offload knows what each layer costs;
* KV cache, f16: 2 (K and V) x n_layers x n_head_kv x head_dim x 2 bytes x ctx;
* compute buffer: llama.cpp's graph reserve for a 512-token micro-batch. Without flash attention
  (llama-cpp-python's default) it is the larger of the attention scores, 4 x ubatch x ctx x
  (n_head + 1) bytes (f32 scores for every head plus the f32 mask), and the logits,
  4 x ubatch x vocab, plus the activations 4 x ubatch x (3 n_embd + n_ff). With flash attention
  the scores are never materialised and the logits term alone remains;
* per-GPU runtime (CUDA/ROCm context 457 MiB, Metal 512 MiB; Ollama's measured minimums),
  the embedder (weights + 256 MiB of activations for 256-token chunks in batches), the app itself
  (Python, torch, Milvus Lite: 768 MiB) and a safety margin (5%, at least 256 MiB);
* RAM is budgeted as what is available now, never more than total less an OS reserve
  (10%, 1-4 GiB). On Apple Silicon there is one pool: the Metal working set.

The choice (``plan``) follows one documented rule, see ``CHOICE_RULE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from localrag.models.catalogue import Catalogue, EmbedderSpec, ModelSpec
from localrag.errors import BadInput, LocalragError
from localrag.models.hardware import GPU, GiB, MiB, Hardware, format_size

# --- the constants the estimate and the rule rest on --------------------------------------------

N_UBATCH = 512  # llama-cpp-python's default n_batch/n_ubatch
GPU_RUNTIME = {"nvidia": 457 * MiB, "amd": 457 * MiB, "apple": 512 * MiB}
APP_OVERHEAD = 768 * MiB  # this Python process with torch + the Milvus Lite server
EMBEDDER_ACTIVATIONS = 256 * MiB
MARGIN_FRACTION = 0.05
MARGIN_MIN = 256 * MiB
OS_RESERVE_FRACTION = 0.10
OS_RESERVE_MIN, OS_RESERVE_MAX = 1 * GiB, 4 * GiB

PREFERRED_CTX = 8192  # a RAG prompt (sources + question) plus the model's reasoning
FALLBACK_CTX = 4096  # the least worth running with; below this "does not fit"
GROW_CTX = {"gpu": (16384, 32768), "cpu": (16384,)}  # extra context tried once the model is chosen

# Decode speed: every weight (but the token embedding) is read once per token, so
# tokens/s ~ bandwidth / bytes. CPU: llama.cpp streams ~7.5 GB/s of weights per physical core on
# a current x86 laptop/desktop (R1-14B at 5.8 tok/s on a 6-core Ryzen AI 5 340 = 8 GB/s per core;
# 3.8 GB/s per core measured on this shared 2-core VM under load, bench_memory_estimate.py --speed),
# up to what two DDR channels deliver. Discrete GPUs: by memory size, the low end of the cards sold with it
# (8 GB cards ~250-450 GB/s, 24 GB ~900, 48 GB+ workstation/data-centre 0.8-3 TB/s).
CPU_BW_PER_CORE = 7.5e9
CPU_BW_MAX = 60e9
GPU_BW_BY_VRAM = ((12 * GiB, 250e9), (20 * GiB, 400e9), (40 * GiB, 800e9))
GPU_BW_LARGEST = 1000e9
MIN_TOK_S = 5.0  # below this a reasoning model's answer takes minutes
# With a usable GPU, a model spilling into RAM must still reach this: about a third of what a
# full offload gives; whoever has a GPU expects answers in seconds, not minutes.
MIN_TOK_S_WITH_GPU = 15.0

CHOICE_RULE = (
    "For every distill and quantization, localrag places the model as fast as memory allows: fully on "
    "the GPU, else as many layers as fit on the GPU with the rest in RAM, else in RAM on the CPU; "
    f"context {PREFERRED_CTX} (or {FALLBACK_CTX} when that is what fits; --ctx forces it). It then picks "
    f"the strongest model that fits fully on the GPU or whose estimated decode speed is at least "
    f"{MIN_TOK_S:g} tokens/s ({MIN_TOK_S_WITH_GPU:g} on a machine with a usable GPU: you have a GPU for "
    "speed), Q4_K_M before Q3_K_M of the same model; if none qualifies, the fastest one that fits. "
    "The speed rule keeps a 2-core laptop on the 1.5B and stops a 70B being run from RAM at under "
    "1 token/s; more memory never yields a weaker model. Context falls back to "
    f"{FALLBACK_CTX} only when nothing fits with {PREFERRED_CTX}. Left-over memory then goes to the "
    "embedder (on the GPU when it fits) and to a longer context."
)

# Strength order for the choice (DeepSeek's evaluation table): Llama-8B is no stronger than
# Qwen-7B (AIME 50.4 vs 55.5, MATH 89.1 vs 92.8), needs more memory (2.3x the KV cache) and is
# weaker in Chinese, so it shares Qwen-7B's rank and loses ties on size.
STRENGTH = {
    "r1-distill-qwen-1.5b": 1,
    "r1-distill-qwen-7b": 2,
    "r1-distill-llama-8b": 2,
    "r1-distill-qwen-14b": 3,
    "r1-distill-qwen-32b": 4,
    "r1-distill-llama-70b": 5,
}
QUANT_PREFERENCE = {"Q4_K_M": 2, "Q3_K_M": 1}

# Bits per weight of llama.cpp's block formats; the quantizer's choices for the embedding
# (the file's base type) and output (Q6_K for the k-quant mixes) tensors.
BPW = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q5_0": 5.5,
    "Q5_1": 6.0, "Q4_K": 4.5, "Q4_0": 4.5, "Q4_1": 5.0, "Q3_K": 3.4375, "Q2_K": 2.625,
}


def _embedding_types(quant: str) -> tuple[float, float]:
    """(token_embd bpw, output bpw) llama.cpp's quantizer writes for ``quant``."""
    q = quant.upper()
    if q in ("F32", "F16", "BF16", "Q8_0"):
        return BPW[q], BPW[q]
    for prefix in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        if q.startswith(prefix):
            return BPW[prefix], BPW["Q6_K"]
    return BPW["Q4_K"], BPW["Q6_K"]  # IQ types: close enough for a split estimate


# --- the llama.cpp memory model -----------------------------------------------------------------


@dataclass(frozen=True)
class LlamaMemory:
    """What llama.cpp allocates for one model/context/offload, by device (bytes)."""

    weights_gpu: int
    weights_cpu: int
    kv_gpu: int
    kv_cpu: int
    compute_gpu: int
    compute_cpu: int
    output: int  # the logits buffer (host)

    @property
    def gpu(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu

    @property
    def cpu(self) -> int:
        return self.weights_cpu + self.kv_cpu + self.compute_cpu + self.output

    @property
    def total(self) -> int:
        return self.gpu + self.cpu


@dataclass(frozen=True)
class WeightSplit:
    token_embd: int
    output: int
    per_layer: float
    n_layers: int

    def on_gpu(self, n_gpu_layers: int) -> int:
        layers = min(n_gpu_layers, self.n_layers)
        return int(self.per_layer * layers) + (self.output if n_gpu_layers > self.n_layers else 0)

    def on_cpu(self, n_gpu_layers: int) -> int:
        layers = self.n_layers - min(n_gpu_layers, self.n_layers)
        return self.token_embd + int(self.per_layer * layers) + (0 if n_gpu_layers > self.n_layers else self.output)

    @property
    def streamed(self) -> int:
        """Bytes read per decoded token: all but the embedding table (a row lookup)."""
        return int(self.per_layer * self.n_layers) + self.output


def weight_split(model: ModelSpec, quant: str, size_bytes: int | None = None) -> WeightSplit:
    size = size_bytes if size_bytes is not None else model.quants[quant].size_bytes
    te_bpw, out_bpw = _embedding_types(quant)
    token_embd = int(model.vocab * model.n_embd * te_bpw / 8)
    output = int(model.vocab * model.n_embd * out_bpw / 8)
    if token_embd + output > 0.8 * size:  # tied embeddings (no output.weight), e.g. small models
        output = 0
        token_embd = min(token_embd, size // 2)
    per_layer = (size - token_embd - output) / model.n_layers
    return WeightSplit(token_embd, output, per_layer, model.n_layers)


def kv_bytes(model: ModelSpec, ctx: int, layers: int | None = None) -> int:
    layers = model.n_layers if layers is None else layers
    return 2 * layers * model.n_head_kv * model.head_dim * 2 * ctx


def compute_bytes(model: ModelSpec, ctx: int, *, n_ubatch: int = N_UBATCH, flash_attn: bool = False) -> int:
    """llama.cpp's compute buffer (graph reserve) for one device running the whole graph."""
    activations = 4 * n_ubatch * (3 * model.n_embd + model.n_ff)
    logits = 4 * n_ubatch * model.vocab + 4 * n_ubatch * 3 * model.n_embd
    if flash_attn:
        return logits
    scores = 4 * n_ubatch * ctx * (model.n_head + 1) + activations
    return max(scores, logits)


def llama_memory(
    model: ModelSpec,
    quant: str,
    ctx: int,
    n_gpu_layers: int = 0,
    *,
    size_bytes: int | None = None,
    n_ubatch: int = N_UBATCH,
    flash_attn: bool = False,
) -> LlamaMemory:
    """What llama.cpp will allocate; ``n_gpu_layers`` > n_layers also offloads the output layer."""
    split = weight_split(model, quant, size_bytes)
    gpu_layers = min(max(n_gpu_layers, 0), model.n_layers)
    compute = compute_bytes(model, ctx, n_ubatch=n_ubatch, flash_attn=flash_attn)
    # The host keeps a small buffer for the embedding lookup when everything else is offloaded,
    # the whole graph's buffer when it runs layers (or the logits) itself.
    host_only_input = 4 * n_ubatch * model.n_embd * 2
    if n_gpu_layers <= 0:
        compute_gpu, compute_cpu = 0, compute
    elif n_gpu_layers > model.n_layers:
        compute_gpu, compute_cpu = compute, host_only_input
    else:
        compute_gpu, compute_cpu = compute, compute
    return LlamaMemory(
        weights_gpu=split.on_gpu(n_gpu_layers) if n_gpu_layers > 0 else 0,
        weights_cpu=split.on_cpu(n_gpu_layers) if n_gpu_layers > 0 else split.token_embd + split.output + int(split.per_layer * model.n_layers),
        kv_gpu=kv_bytes(model, ctx, gpu_layers),
        kv_cpu=kv_bytes(model, ctx, model.n_layers - gpu_layers),
        compute_gpu=compute_gpu,
        compute_cpu=compute_cpu,
        output=4 * model.vocab,
    )


def parse_llama_log(text: str) -> dict[str, int]:
    """Buffer sizes from llama.cpp's verbose load log, summed per kind, in bytes:
    {"model": ..., "repack": ..., "kv": ..., "compute": ..., "output": ...} (absent when not logged).

    Lines look like "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB" or
    "sched_reserve:        CPU compute buffer size =    99.38 MiB". ``repack`` is the CPU_REPACK
    model buffer: a re-laid-out copy of some mapped tensors (Q4_K, Q4_0, ...) for faster CPU
    kernels; the mapped originals it replaces are then clean, reclaimable page cache, so the
    memory a model really holds on to is ``model`` (the mapped file's tensors), not both.
    """
    import re

    sizes: dict[str, int] = {}
    pattern = re.compile(r"^\S+:\s+(\S+)\s+(model|KV|compute|output) buffer size =\s+([\d.]+) MiB", re.MULTILINE)
    for device, kind, mib in pattern.findall(text):
        key = "repack" if kind == "model" and device.upper().endswith("_REPACK") else kind.lower()
        sizes[key] = sizes.get(key, 0) + int(float(mib) * MiB)
    return sizes


# --- budgets ------------------------------------------------------------------------------------


def os_reserve(ram_total: int) -> int:
    return int(min(max(ram_total * OS_RESERVE_FRACTION, OS_RESERVE_MIN), OS_RESERVE_MAX))


def ram_budget(hw: Hardware) -> int:
    """RAM localrag may use: available now, capped by total less the OS reserve, less the app."""
    return max(0, min(hw.ram_available, hw.ram_total - os_reserve(hw.ram_total)) - APP_OVERHEAD)


def planned_gpus(hw: Hardware) -> list[GPU]:
    """The GPUs a model can be split over: one llama.cpp build drives one vendor's GPUs."""
    return [g for g in hw.gpus if g.vendor == hw.gpus[0].vendor] if hw.gpus else []


def gpu_usable(hw: Hardware) -> bool:
    return bool(hw.gpus) and hw.gpu_offload_supported


def gpu_budget(hw: Hardware) -> int:
    """Free VRAM less each GPU's runtime (CUDA/ROCm context, Metal)."""
    if not gpu_usable(hw):
        return 0
    return max(0, sum(max(0, g.vram_free - GPU_RUNTIME.get(g.vendor, 457 * MiB)) for g in planned_gpus(hw)))


def margin(nbytes: int) -> int:
    return max(MARGIN_MIN, int(nbytes * MARGIN_FRACTION))


def embedder_bytes(emb: EmbedderSpec) -> int:
    return emb.size_bytes + EMBEDDER_ACTIVATIONS


def cpu_bandwidth(hw: Hardware) -> float:
    return min(max(1, hw.cpu_cores_physical) * CPU_BW_PER_CORE, CPU_BW_MAX)


def gpu_bandwidth(gpu: GPU, ram_total: int) -> float:
    if gpu.vendor == "apple":
        # M-series by memory size: base (<= 24 GB) 100 GB/s, Pro 200, Max 400, Ultra 800
        for limit, bw in ((24 * GiB, 100e9), (48 * GiB, 200e9), (128 * GiB, 400e9)):
            if ram_total <= limit:
                return bw
        return 800e9
    for limit, bw in GPU_BW_BY_VRAM:
        if gpu.vram_total < limit:
            return bw
    return GPU_BW_LARGEST


# --- candidates ---------------------------------------------------------------------------------


@dataclass
class Candidate:
    model: str
    quant: str
    fit: str  # "gpu" | "partial" | "cpu" | "none"
    n_gpu_layers: int  # 0 on CPU; n_layers + 1 = everything, output layer included
    ctx: int
    estimated_bytes: int  # what this placement needs in the pool(s) it uses
    budget_bytes: int  # what those pools allow
    breakdown: dict = field(default_factory=dict)
    tok_s: float | None = None  # estimated decode speed
    note: str = ""  # why it does not fit / what it would need

    @property
    def fits(self) -> bool:
        return self.fit != "none"


@dataclass
class Plan:
    choice: Candidate | None
    candidates: list[Candidate]
    reason: str
    embedder: str
    embedder_device: str  # "cpu" | "cuda" | "mps"
    rule: str = CHOICE_RULE


def _label(model: ModelSpec, quant: str) -> str:
    return f"{model.short_name} {quant}"


def _gib(n: int | float) -> str:
    return format_size(n)


def _place(
    model: ModelSpec,
    quant: str,
    hw: Hardware,
    ctx: int,
    emb_bytes: int,
    *,
    flash_attn: bool = False,
    allow: tuple[str, ...] = ("gpu", "partial", "cpu"),
    size_bytes: int | None = None,
) -> Candidate:
    """The fastest placement of one model/quant at ``ctx`` that fits, or fit="none" with the numbers."""
    size = size_bytes if size_bytes is not None else model.quants[quant].size_bytes
    split = weight_split(model, quant, size)
    n_all = model.n_layers + 1
    ram_b = ram_budget(hw)
    base = {"weights": size, "kv": kv_bytes(model, ctx), "compute": compute_bytes(model, ctx, flash_attn=flash_attn),
            "embedder": emb_bytes, "app_reserved": APP_OVERHEAD, "ctx": ctx}

    def candidate(fit, ngl, est, budget, extra, tok_s, note=""):
        return Candidate(model.id, quant, fit, ngl, ctx, int(est), int(budget), {**base, **extra}, tok_s, note)

    if hw.unified_memory and gpu_usable(hw):
        # Apple Silicon: one pool. The GPU may wire at most the Metal working set; everything
        # else localrag holds (app, embedder) lives in the same RAM.
        gpu = hw.gpus[0]
        mem = llama_memory(model, quant, ctx, n_all, size_bytes=size, flash_attn=flash_attn)
        runtime = GPU_RUNTIME["apple"]
        need = mem.total + runtime + emb_bytes
        need += margin(need)
        working_set = sum(g.vram_free for g in planned_gpus(hw))
        budget = min(working_set, ram_b)
        tok_s = gpu_bandwidth(gpu, hw.ram_total) / max(split.streamed, 1)
        extra = {"gpu_bytes": need, "gpu_budget": working_set, "ram_bytes": need + APP_OVERHEAD,
                 "ram_budget": ram_b + APP_OVERHEAD, "runtime": runtime}
        if need <= budget and "gpu" in allow:
            return candidate("gpu", n_all, need, budget, extra, tok_s)
        return candidate("none", 0, need, budget, extra, None,
                         f"needs {_gib(need)}, the Metal working set allows {_gib(budget)}")

    ram_cpu_only = None
    if gpu_usable(hw):
        g_budget = gpu_budget(hw)
        n_gpus = len(planned_gpus(hw))
        vendor = hw.gpus[0].vendor
        runtime = sum(GPU_RUNTIME.get(g.vendor, 457 * MiB) for g in planned_gpus(hw))
        gbw = gpu_bandwidth(hw.gpus[0], hw.ram_total)
        cbw = cpu_bandwidth(hw)
        # Full offload: the compute buffer is reserved on every GPU the layers are split over.
        mem = llama_memory(model, quant, ctx, n_all, size_bytes=size, flash_attn=flash_attn)
        gpu_need = mem.gpu + mem.compute_gpu * (n_gpus - 1)
        gpu_need += margin(gpu_need)
        ram_need = mem.cpu + emb_bytes
        ram_need += margin(ram_need)
        full_extra = {"gpu_bytes": gpu_need, "gpu_budget": g_budget, "ram_bytes": ram_need, "ram_budget": ram_b,
                      "runtime": runtime}
        if "gpu" in allow and gpu_need <= g_budget and ram_need <= ram_b:
            return candidate("gpu", n_all, gpu_need, g_budget, full_extra, gbw / max(split.streamed, 1))
        # Partial: as many repeating layers as fit; the output layer stays on the CPU.
        if "partial" in allow:
            for layers in range(model.n_layers, 0, -1):
                mem = llama_memory(model, quant, ctx, layers, size_bytes=size, flash_attn=flash_attn)
                g_need = mem.gpu + mem.compute_gpu * (n_gpus - 1)
                g_need += margin(g_need)
                if g_need > g_budget:
                    continue
                r_need = mem.cpu + emb_bytes
                r_need += margin(r_need)
                if r_need > ram_b:
                    break  # fewer GPU layers only needs more RAM
                t = mem.weights_gpu / gbw + (split.streamed - mem.weights_gpu) / cbw
                extra = {"gpu_bytes": g_need, "gpu_budget": g_budget, "ram_bytes": r_need, "ram_budget": ram_b,
                         "runtime": runtime}
                return candidate("partial", layers, g_need + r_need, g_budget + ram_b, extra, 1 / t,
                                 f"{layers} of {model.n_layers} layers on the {vendor.upper()} GPU")
        ram_cpu_only = (gpu_need, g_budget)

    # CPU only: everything in RAM.
    mem = llama_memory(model, quant, ctx, 0, size_bytes=size, flash_attn=flash_attn)
    need = mem.total + emb_bytes
    need += margin(need)
    extra = {"gpu_bytes": 0, "gpu_budget": gpu_budget(hw), "ram_bytes": need, "ram_budget": ram_b}
    tok_s = cpu_bandwidth(hw) / max(split.streamed, 1)
    if "cpu" in allow and need <= ram_b:
        return candidate("cpu", 0, need, ram_b, extra, tok_s)
    note = f"needs {_gib(need)} of RAM, {_gib(ram_b)} usable"
    if ram_cpu_only:
        note = f"needs {_gib(ram_cpu_only[0])} on the GPU ({_gib(ram_cpu_only[1])} usable) or {_gib(need)} of RAM ({_gib(ram_b)} usable)"
    return candidate("none", 0, need, ram_b, extra, None, note)


def min_tok_s(hw: Hardware) -> float:
    return MIN_TOK_S_WITH_GPU if gpu_usable(hw) else MIN_TOK_S


def qualifies(c: Candidate, hw: Hardware) -> bool:
    """Fits, and is fast enough to be chosen (full GPU fits always are)."""
    return c.fit == "gpu" or (c.fits and (c.tok_s or 0) >= min_tok_s(hw))


def _choose(cands: list[Candidate], catalogue: Catalogue, hw: Hardware) -> Candidate | None:
    """The rule in CHOICE_RULE, on already-placed candidates."""
    fitting = [c for c in cands if c.fits]
    if not fitting:
        return None

    def strength(c):
        return STRENGTH.get(c.model, 0)

    def size(c):
        return catalogue.model(c.model).quants[c.quant].size_bytes

    usable = [c for c in fitting if qualifies(c, hw)]
    if usable:
        # strongest model; within it, the better quant; then the smaller footprint
        return max(usable, key=lambda c: (strength(c), QUANT_PREFERENCE.get(c.quant, 0), -size(c)))
    # Nothing is fast enough: the fastest that fits (the smallest model and quant, as far up the
    # GPU as it goes), so that more memory can only ever move the choice up.
    return max(fitting, key=lambda c: (c.tok_s or 0, strength(c)))


def _preference_order(cands: list[Candidate], choice: Candidate | None, hw: Hardware) -> list[Candidate]:
    """Candidates best first: the choice, then the others that qualify (strongest first), then
    those that fit but are slow (fastest first), then those that do not fit (smallest first)."""

    def key(c: Candidate):
        if c is choice:
            return (0,)
        if qualifies(c, hw):
            return (1, -STRENGTH.get(c.model, 0), -QUANT_PREFERENCE.get(c.quant, 0), c.estimated_bytes)
        if c.fits:
            return (2, -(c.tok_s or 0), -QUANT_PREFERENCE.get(c.quant, 0))
        return (3, c.estimated_bytes)

    return sorted(cands, key=key)


def _embedder_for(catalogue: Catalogue, hw: Hardware, embedder: str | None) -> EmbedderSpec:
    if embedder:
        return catalogue.embedder(embedder)
    return catalogue.default_embedder("gpu" if gpu_usable(hw) else "cpu")


def _gpu_device(hw: Hardware) -> str:
    # torch names ROCm devices "cuda" too
    return "mps" if hw.gpus and hw.gpus[0].vendor == "apple" else "cuda"


def plan(
    catalogue: Catalogue,
    hardware: Hardware,
    *,
    ctx: int | None = None,
    embedder: str | None = None,
    flash_attn: bool = False,
) -> Plan:
    """Every distill x quant placed on ``hardware``, the choice, and why (see CHOICE_RULE)."""
    if ctx is not None and ctx < 512:
        raise BadInput(f"context {ctx} is too small", hint="use --ctx 4096 or more")
    emb = _embedder_for(catalogue, hardware, embedder)
    emb_b = embedder_bytes(emb)
    def place_all(want: int) -> list[Candidate]:
        return [
            _place(m, q, hardware, min(want, m.ctx_max), emb_b, flash_attn=flash_attn)
            for m in catalogue.distills
            for q in m.quants
        ]

    cands = place_all(ctx or PREFERRED_CTX)
    if ctx is None and not any(c.fits for c in cands):
        cands = place_all(FALLBACK_CTX)
    choice = _choose(cands, catalogue, hardware)
    cands = _preference_order(cands, choice, hardware)
    emb_device = "cpu"
    if choice is not None:
        model = catalogue.model(choice.model)
        emb_device = _settle_embedder(choice, model, hardware, emb, flash_attn)
        if ctx is None:
            _grow_ctx(choice, model, hardware, emb, emb_device, flash_attn, cands)
    reason = _reason(choice, cands, catalogue, hardware, emb, emb_device, forced_ctx=ctx)
    return Plan(choice, cands, reason, emb.id, emb_device)


def _settle_embedder(choice, model, hw, emb, flash_attn) -> str:
    """Put the embedder on the GPU when it fits beside the chosen model there."""
    if not gpu_usable(hw):
        return "cpu"
    if hw.unified_memory:
        return "mps"  # same pool; already counted in the working set
    if choice.fit != "gpu":
        return "cpu"
    gpu_left = choice.breakdown["gpu_budget"] - choice.breakdown["gpu_bytes"]
    if embedder_bytes(emb) <= gpu_left:
        choice.breakdown["gpu_bytes"] += embedder_bytes(emb)
        choice.breakdown["ram_bytes"] -= embedder_bytes(emb)
        choice.breakdown["embedder_on"] = "gpu"
        choice.estimated_bytes = choice.breakdown["gpu_bytes"]
        return _gpu_device(hw)
    return "cpu"


def _grow_ctx(choice, model, hw, emb, emb_device, flash_attn, cands) -> None:
    """Give left-over memory to a longer context, keeping the chosen placement."""
    steps = GROW_CTX["gpu" if choice.fit == "gpu" else "cpu"] if choice.fit != "partial" else ()
    emb_b = embedder_bytes(emb)
    for bigger in steps:
        if bigger <= choice.ctx or bigger > model.ctx_max:
            continue
        allow = (choice.fit,)
        on_gpu = emb_device != "cpu" and not hw.unified_memory
        trial = _place(model, choice.quant, hw, bigger, 0 if on_gpu else emb_b, flash_attn=flash_attn, allow=allow)
        if on_gpu and trial.fits:
            trial.breakdown["gpu_bytes"] += emb_b
            trial.breakdown["embedder_on"] = "gpu"
            trial.estimated_bytes = trial.breakdown["gpu_bytes"]
            if trial.breakdown["gpu_bytes"] > trial.breakdown["gpu_budget"]:
                break
        if not trial.fits:
            break
        idx = cands.index(choice)
        choice.ctx, choice.estimated_bytes, choice.budget_bytes = trial.ctx, trial.estimated_bytes, trial.budget_bytes
        choice.breakdown = trial.breakdown
        cands[idx] = choice


def plan_model(
    catalogue: Catalogue,
    hardware: Hardware,
    model_id: str,
    quant: str | None = None,
    *,
    ctx: int | None = None,
    embedder: str | None = None,
    flash_attn: bool = False,
) -> Candidate:
    """Offload and context for a model the user picked (fit "none" when it cannot run here).

    ``quant`` None: Q4_K_M when it fits, else the best that does. ``model_id`` may be any spec
    the catalogue parses ("qwen-7b", "7b:Q3_K_M").
    """
    model, spec_quant = catalogue.parse_spec(model_id)
    quant = quant or spec_quant
    emb = _embedder_for(catalogue, hardware, embedder)
    emb_b = embedder_bytes(emb)
    want = min(ctx or PREFERRED_CTX, model.ctx_max)
    if quant is not None:
        quant = model.quant(quant).name
        quants = [quant]
    else:
        quants = sorted(model.quants, key=lambda q: -QUANT_PREFERENCE.get(q, 0))
    first = None
    tries = [want] if ctx is not None or want <= FALLBACK_CTX else [want, FALLBACK_CTX]
    for q, size in ((q, w) for w in tries for q in quants):
        cand = _place(model, q, hardware, size, emb_b, flash_attn=flash_attn)
        first = first or cand
        if cand.fits:
            if ctx is None and cand.fit != "partial" and not model.starter:
                _grow_ctx(cand, model, hardware, emb, "cpu", flash_attn, [cand])
            return cand
    return first


# --- the reason, in words -----------------------------------------------------------------------


def _where(hw: Hardware) -> str:
    if hw.unified_memory and gpu_usable(hw):
        return f"the {_gib(sum(g.vram_free for g in planned_gpus(hw)))} Metal working set"
    if gpu_usable(hw):
        return f"{_gib(gpu_budget(hw))} usable VRAM"
    return f"{_gib(ram_budget(hw))} usable RAM"


_PLACE_WORDS = {"gpu": "fully on the GPU", "partial": "partly on the GPU", "cpu": "on the CPU", "none": "nowhere"}


def _reason(choice, cands, catalogue, hw, emb, emb_device, *, forced_ctx) -> str:
    parts = []
    if hw.gpus and not hw.gpu_offload_supported:
        parts.append(
            f"{hw.gpus[0].name} found, but this llama-cpp-python build cannot offload to a GPU, so this plan "
            "is for the CPU (install a CUDA/ROCm/Metal build of llama-cpp-python to use it)."
        )
    if choice is None:
        smallest = min(cands, key=lambda c: c.estimated_bytes)
        m = catalogue.model(smallest.model)
        parts.append(
            f"No distill fits: even {_label(m, smallest.quant)} {smallest.note or 'does not fit'}. "
            "The bundled starter model (SmolLM2-135M) still works for trying localrag; "
            "free memory or use a bigger machine for the R1 distills."
        )
        return " ".join(parts)
    model = catalogue.model(choice.model)
    label = _label(model, choice.quant)
    speed = f", about {choice.tok_s:.0f} tokens/s" if choice.tok_s else ""
    if choice.fit == "gpu" and hw.unified_memory:
        head = f"{label} fits in {_where(hw)} with {choice.ctx} context ({_gib(choice.estimated_bytes)} needed{speed})."
    elif choice.fit == "gpu":
        head = f"{label} fits fully in {_where(hw)} with {choice.ctx} context ({_gib(choice.breakdown['gpu_bytes'])} needed{speed})."
    elif choice.fit == "partial":
        if choice.n_gpu_layers >= model.n_layers:
            split = f"all {model.n_layers} layers on the GPU and the output layer in RAM"
        else:
            split = f"{choice.n_gpu_layers} of {model.n_layers} layers on the GPU and the rest in RAM"
        head = f"{label} runs with {split}, {choice.ctx} context{speed} (estimated)."
    else:
        head = f"{label} runs on the CPU from {_where(hw)} with {choice.ctx} context ({_gib(choice.estimated_bytes)} needed{speed} on {hw.cpu_cores_physical} cores)."
    parts.append(head)
    if forced_ctx is None and choice.ctx < PREFERRED_CTX:
        parts.append(f"Context is cut to {choice.ctx}: no distill fits with {PREFERRED_CTX}.")

    # The next stronger model: why not that one?
    strength = STRENGTH.get(choice.model, 0)
    stronger = [c for c in cands if STRENGTH.get(c.model, 0) > strength]
    if stronger:
        next_rank = min(STRENGTH.get(c.model, 0) for c in stronger)
        tier = [c for c in stronger if STRENGTH.get(c.model, 0) == next_rank]
        tier_fits = [c for c in tier if c.fits]
        nxt = max(tier_fits, key=lambda c: c.tok_s or 0) if tier_fits else min(tier, key=lambda c: c.estimated_bytes)
        nm = catalogue.model(nxt.model)
        if nxt.fits:
            parts.append(
                f"{_label(nm, nxt.quant)} would also fit ({_PLACE_WORDS[nxt.fit]}{', ' + nxt.note if nxt.note else ''}) but decodes at "
                f"about {nxt.tok_s:.1f} tokens/s, under the {min_tok_s(hw):g} tokens/s localrag wants for a reasoning model here; "
                f"pick it with --model {nm.aliases[0] if nm.aliases else nm.id}:{nxt.quant} if you can wait."
            )
        else:
            parts.append(f"{_label(nm, nxt.quant)} would not fit: it {nxt.note}.")
    if choice.quant != "Q4_K_M" and "Q4_K_M" in model.quants:
        q4 = next(c for c in cands if c.model == choice.model and c.quant == "Q4_K_M")
        if q4.fits:
            parts.append(f"Q4_K_M would fit but decodes at about {q4.tok_s:.1f} tokens/s.")
        else:
            parts.append(f"Its Q4_K_M would not fit ({q4.note}).")
    if forced_ctx:
        parts.append(f"Context {forced_ctx} as asked (--ctx).")
    where_emb = {"cpu": "on the CPU", "cuda": "on the GPU", "mps": "on the GPU (Metal)"}[emb_device]
    parts.append(f"Embedder {emb.id} ({_gib(embedder_bytes(emb))}) runs {where_emb} and is counted in the budget.")
    return " ".join(parts)


# --- which starter answers --------------------------------------------------------------------------


def best_starter(settings: "Settings", catalogue: "Catalogue", starters: list, hardware=None):
    """The biggest installed starter the fit says runs here (the real 1.5B before SmolLM2); the
    smallest when none fits (the engine then explains why it cannot load)."""
    from localrag.models import hardware as hw

    if hardware is None:
        hardware = hw.detect(settings.models_dir)
    by_size = sorted(starters, key=lambda m: -(m.spec.params_b or 0.0))
    for item in by_size:
        try:
            cand = plan_model(catalogue, hardware, item.spec.id, item.quant, embedder=settings.embedder)
        except LocalragError:
            continue
        if cand.fits:
            return item
    return by_size[-1]
