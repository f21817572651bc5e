"""Will it fit, and which model should this machine run?

Memory comes from ``memory`` (what llama.cpp allocates, what the machine gives it).

The choice (``plan``) follows one documented rule, see ``choice_rule``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from localrag.errors import BadInput, LocalragError
from localrag.models.catalogue import Catalogue, EmbedderSpec, ModelSpec
from localrag.models.hardware import Hardware
from localrag.models.memory import (  # noqa: F401 - fit.* is where callers and tests find them
    APP_OVERHEAD, GPU_RUNTIME, N_UBATCH, LlamaMemory, WeightSplit, compute_bytes, cpu_bandwidth, embedder_bytes,
    gpu_bandwidth, gpu_budget, gpu_usable, kv_bytes, llama_memory, margin, os_reserve, parse_llama_log,
    planned_gpus, ram_budget, weight_split,
)
from localrag.units import format_size

# --- the constants the estimate and the rule rest on --------------------------------------------

# The context planned for first and the least worth running with are models.toml's [defaults]
# min_ctx and fallback_ctx.
GROW_CTX = {"gpu": (16384, 32768), "cpu": (16384,)}  # extra context tried once the model is chosen

MIN_TOK_S = 5.0  # below this a reasoning model's answer takes minutes
# With a usable GPU, a model spilling into RAM must still reach this: about a third of what a
# full offload gives; whoever has a GPU expects answers in seconds, not minutes.
MIN_TOK_S_WITH_GPU = 15.0


def choice_rule(catalogue: Catalogue) -> str:
    """The rule ``plan`` follows, in words, with the catalogue's context sizes."""
    preferred, fallback = _preferred_ctx(catalogue), _fallback_ctx(catalogue)
    return (
        "For every distill and quantization, localrag places the model as fast as memory allows: fully on "
        "the GPU, else as many layers as fit on the GPU with the rest in RAM, else in RAM on the CPU; "
        f"context {preferred} (or {fallback} when that is what fits; a context you set wins). It then picks "
        f"the strongest model that fits fully on the GPU or whose estimated decode speed is at least "
        f"{MIN_TOK_S:g} tokens/s ({MIN_TOK_S_WITH_GPU:g} on a machine with a usable GPU: you have a GPU for "
        "speed), the larger quantization before the smaller of the same model; if none qualifies, the "
        "fastest one that fits. The speed rule keeps a 2-core laptop on the 1.5B and stops a 70B being run "
        "from RAM at under 1 token/s; more memory never yields a weaker model. Context falls back to "
        f"{fallback} only when nothing fits with {preferred}. Left-over memory then goes to the "
        "embedder (on the GPU when it fits) and to a longer context."
    )


def _preferred_ctx(catalogue: Catalogue) -> int:
    return catalogue.defaults.need("min_ctx")


def _fallback_ctx(catalogue: Catalogue) -> int:
    return catalogue.defaults.need("fallback_ctx")


def strength(catalogue: Catalogue, model_id: str) -> int:
    """How the choice ranks a model (models.toml ``strength``)."""
    return catalogue.model(model_id).strength


def quant_rank(catalogue: Catalogue, c: "Candidate") -> int:
    """How a candidate's quantization ranks among its model's (the catalogue's order)."""
    return catalogue.model(c.model).quant_rank(c.quant)


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
    rule: str = ""  # choice_rule(catalogue)


def _label(model: ModelSpec, quant: str) -> str:
    return f"{model.short_name} {quant}"


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
        mem = llama_memory(model, quant, ctx, n_all, size_bytes=size, flash_attn=flash_attn)
        return _place_unified(hw, mem.total, emb_bytes, split.streamed, n_all, allow, candidate)

    ram_cpu_only = None
    if gpu_usable(hw):
        g_budget = gpu_budget(hw)
        n_gpus = len(planned_gpus(hw))
        vendor = hw.gpus[0].vendor
        runtime = sum(GPU_RUNTIME.get(g.vendor, GPU_RUNTIME["nvidia"]) for g in planned_gpus(hw))
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
        found = _partial(model, quant, ctx, size, emb_bytes, flash_attn, n_gpus, g_budget, ram_b) if "partial" in allow else None
        if found is not None:
            layers, g_need, r_need, weights_gpu = found
            t = weights_gpu / gbw + (split.streamed - weights_gpu) / cbw
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
    note = f"needs {format_size(need)} of RAM, {format_size(ram_b)} usable"
    if ram_cpu_only:
        note = f"needs {format_size(ram_cpu_only[0])} on the GPU ({format_size(ram_cpu_only[1])} usable) or {format_size(need)} of RAM ({format_size(ram_b)} usable)"
    return candidate("none", 0, need, ram_b, extra, None, note)


def _place_unified(hw: Hardware, llama_bytes: int, emb_bytes: int, streamed: int, n_all: int, allow, candidate):
    """Apple Silicon: one pool. The GPU may wire at most the Metal working set; everything else
    localrag holds (app, embedder) lives in the same RAM."""
    ram_b = ram_budget(hw)
    runtime = GPU_RUNTIME["apple"]
    need = llama_bytes + runtime + emb_bytes
    need += margin(need)
    working_set = sum(g.vram_free for g in planned_gpus(hw))
    budget = min(working_set, ram_b)
    tok_s = gpu_bandwidth(hw.gpus[0], hw.ram_total) / max(streamed, 1)
    extra = {"gpu_bytes": need, "gpu_budget": working_set, "ram_bytes": need + APP_OVERHEAD,
             "ram_budget": ram_b + APP_OVERHEAD, "runtime": runtime}
    if need <= budget and "gpu" in allow:
        return candidate("gpu", n_all, need, budget, extra, tok_s)
    return candidate("none", 0, need, budget, extra, None,
                     f"needs {format_size(need)}, the Metal working set allows {format_size(budget)}")


def _partial(model, quant, ctx, size, emb_bytes, flash_attn, n_gpus, g_budget, ram_b):
    """The most repeating layers that fit on the GPU(s), the output layer on the CPU:
    (layers, GPU bytes, RAM bytes, weight bytes on the GPU), or None."""
    for layers in range(model.n_layers, 0, -1):
        mem = llama_memory(model, quant, ctx, layers, size_bytes=size, flash_attn=flash_attn)
        g_need = mem.gpu + mem.compute_gpu * (n_gpus - 1)
        g_need += margin(g_need)
        if g_need > g_budget:
            continue
        r_need = mem.cpu + emb_bytes
        r_need += margin(r_need)
        if r_need > ram_b:
            return None  # fewer GPU layers only needs more RAM
        return layers, g_need, r_need, mem.weights_gpu
    return None


def min_tok_s(hw: Hardware) -> float:
    return MIN_TOK_S_WITH_GPU if gpu_usable(hw) else MIN_TOK_S


def qualifies(c: Candidate, hw: Hardware) -> bool:
    """Fits, and is fast enough to be chosen (full GPU fits always are)."""
    return c.fit == "gpu" or (c.fits and (c.tok_s or 0) >= min_tok_s(hw))


def _choose(cands: list[Candidate], catalogue: Catalogue, hw: Hardware) -> Candidate | None:
    """The rule in choice_rule, on already-placed candidates."""
    fitting = [c for c in cands if c.fits]
    if not fitting:
        return None

    def rank(c):
        return strength(catalogue, c.model)

    def size(c):
        return catalogue.model(c.model).quants[c.quant].size_bytes

    usable = [c for c in fitting if qualifies(c, hw)]
    if usable:
        # strongest model; within it, the better quant; then the smaller footprint
        return max(usable, key=lambda c: (rank(c), quant_rank(catalogue, c), -size(c)))
    # Nothing is fast enough: the fastest that fits (the smallest model and quant, as far up the
    # GPU as it goes), so that more memory can only ever move the choice up.
    return max(fitting, key=lambda c: (c.tok_s or 0, rank(c)))


def _preference_order(cands: list[Candidate], choice: Candidate | None, hw: Hardware, catalogue: Catalogue) -> list[Candidate]:
    """Candidates best first: the choice, then the others that qualify (strongest first), then
    those that fit but are slow (fastest first), then those that do not fit (smallest first)."""

    def key(c: Candidate):
        if c is choice:
            return (0,)
        if qualifies(c, hw):
            return (1, -strength(catalogue, c.model), -quant_rank(catalogue, c), c.estimated_bytes)
        if c.fits:
            return (2, -(c.tok_s or 0), -quant_rank(catalogue, c))
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
    """Every distill x quant placed on ``hardware``, the choice, and why (see choice_rule)."""
    if ctx is not None and ctx < 512:
        raise BadInput(f"context {ctx} is too small", hint="Use a context of 4096 tokens or more.")
    emb = _embedder_for(catalogue, hardware, embedder)
    emb_b = embedder_bytes(emb)
    def place_all(want: int) -> list[Candidate]:
        return [
            _place(m, q, hardware, min(want, m.ctx_max), emb_b, flash_attn=flash_attn)
            for m in catalogue.distills
            for q in m.quants
        ]

    cands = place_all(ctx or _preferred_ctx(catalogue))
    if ctx is None and not any(c.fits for c in cands):
        cands = place_all(_fallback_ctx(catalogue))
    choice = _choose(cands, catalogue, hardware)
    cands = _preference_order(cands, choice, hardware, catalogue)
    emb_device = "cpu"
    if choice is not None:
        model = catalogue.model(choice.model)
        emb_device = _settle_embedder(choice, model, hardware, emb, flash_attn)
        if ctx is None:
            _grow_ctx(choice, model, hardware, emb, emb_device, flash_attn, cands)
    reason = _reason(choice, cands, catalogue, hardware, emb, emb_device, forced_ctx=ctx)
    return Plan(choice, cands, reason, emb.id, emb_device, choice_rule(catalogue))


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

    ``quant`` None: the most preferred quant that fits (catalogue order). ``model_id`` may be any spec
    the catalogue parses ("qwen-7b", "7b:Q3_K_M").
    """
    model, spec_quant = catalogue.parse_spec(model_id)
    quant = quant or spec_quant
    emb = _embedder_for(catalogue, hardware, embedder)
    emb_b = embedder_bytes(emb)
    want = min(ctx or _preferred_ctx(catalogue), model.ctx_max)
    fallback = _fallback_ctx(catalogue)
    if quant is not None:
        quant = model.quant(quant).name
        quants = [quant]
    else:
        quants = sorted(model.quants, key=lambda q: -model.quant_rank(q))
    first = None
    tries = [want] if ctx is not None or want <= fallback else [want, fallback]
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
        return f"the {format_size(sum(g.vram_free for g in planned_gpus(hw)))} Metal working set"
    if gpu_usable(hw):
        return f"{format_size(gpu_budget(hw))} usable VRAM"
    return f"{format_size(ram_budget(hw))} usable RAM"


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
        head = f"{label} fits in {_where(hw)} with {choice.ctx} context ({format_size(choice.estimated_bytes)} needed{speed})."
    elif choice.fit == "gpu":
        head = f"{label} fits fully in {_where(hw)} with {choice.ctx} context ({format_size(choice.breakdown['gpu_bytes'])} needed{speed})."
    elif choice.fit == "partial":
        if choice.n_gpu_layers >= model.n_layers:
            split = f"all {model.n_layers} layers on the GPU and the output layer in RAM"
        else:
            split = f"{choice.n_gpu_layers} of {model.n_layers} layers on the GPU and the rest in RAM"
        head = f"{label} runs with {split}, {choice.ctx} context{speed} (estimated)."
    else:
        head = f"{label} runs on the CPU from {_where(hw)} with {choice.ctx} context ({format_size(choice.estimated_bytes)} needed{speed} on {hw.cpu_cores_physical} cores)."
    parts.append(head)
    preferred = _preferred_ctx(catalogue)
    if forced_ctx is None and choice.ctx < preferred:
        parts.append(f"Context is cut to {choice.ctx}: no distill fits with {preferred}.")

    # The next stronger model: why not that one?
    mine = strength(catalogue, choice.model)
    stronger = [c for c in cands if strength(catalogue, c.model) > mine]
    if stronger:
        next_rank = min(strength(catalogue, c.model) for c in stronger)
        tier = [c for c in stronger if strength(catalogue, c.model) == next_rank]
        tier_fits = [c for c in tier if c.fits]
        nxt = max(tier_fits, key=lambda c: c.tok_s or 0) if tier_fits else min(tier, key=lambda c: c.estimated_bytes)
        nm = catalogue.model(nxt.model)
        if nxt.fits:
            parts.append(
                f"{_label(nm, nxt.quant)} would also fit ({_PLACE_WORDS[nxt.fit]}{', ' + nxt.note if nxt.note else ''}) but decodes at "
                f"about {nxt.tok_s:.1f} tokens/s, under the {min_tok_s(hw):g} tokens/s localrag wants for a reasoning model here; "
                f"ask for {nm.aliases[0] if nm.aliases else nm.id}:{nxt.quant} by name if you can wait."
            )
        else:
            parts.append(f"{_label(nm, nxt.quant)} would not fit: it {nxt.note}.")
    best = model.best_quant
    if choice.quant != best:
        top = next(c for c in cands if c.model == choice.model and c.quant == best)
        if top.fits:
            parts.append(f"{best} would fit but decodes at about {top.tok_s:.1f} tokens/s.")
        else:
            parts.append(f"Its {best} would not fit ({top.note}).")
    if forced_ctx:
        parts.append(f"Context {forced_ctx} as asked.")
    where_emb = {"cpu": "on the CPU", "cuda": "on the GPU", "mps": "on the GPU (Metal)"}[emb_device]
    parts.append(f"Embedder {emb.id} ({format_size(embedder_bytes(emb))}) runs {where_emb} and is counted in the budget.")
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
