"""What llama.cpp allocates for a model, and what a machine gives it: the numbers the fit rests on.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from localrag.models.catalogue import EmbedderSpec, ModelSpec
from localrag.models.hardware import GPU, Hardware
from localrag.units import GiB, MiB

N_UBATCH = 512  # llama-cpp-python's default n_batch/n_ubatch
GPU_RUNTIME = {"nvidia": 457 * MiB, "amd": 457 * MiB, "apple": 512 * MiB}
APP_OVERHEAD = 768 * MiB  # this Python process with torch + the Milvus Lite server
EMBEDDER_ACTIVATIONS = 256 * MiB
MARGIN_FRACTION = 0.05
MARGIN_MIN = 256 * MiB
OS_RESERVE_FRACTION = 0.10
OS_RESERVE_MIN, OS_RESERVE_MAX = 1 * GiB, 4 * GiB

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
