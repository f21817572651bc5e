"""One loaded GGUF model (llama-cpp-python): the R1 prompt format, streaming, KV prefix reuse.

Keep the ``Engine`` object to keep the model *and* its KV cache: the next call that shares a
prompt prefix (a follow-up question, the same sources) only evaluates the new tokens.

Prompt format. The R1 distills get DeepSeek's model-card format whatever template the GGUF
carries: BOS, ``<｜User｜>`` turns holding every instruction (no system prompt), earlier answers
without their thinking closed by ``<｜end▁of▁sentence｜>``, and the reply forced to start with
``<think>\\n``. Markers are tokenized as special tokens, message text is not, so a document that
contains "<｜User｜>" cannot fake a turn. Other models (the SmolLM2 starter) use the chat template
stored in their GGUF and do not think.

The sampling loop itself is ``generation.generate``. What the R1 format needs from the catalogue
(the think prefix, the stop markers, whether a system prompt stays one, the model card's
sampling) comes from models.toml's ``[defaults]``.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from localrag.errors import BadFile, DoesNotFit, LocalragError, NotInstalled
from localrag.models.gguf import quick_check_gguf, read_gguf, shard_paths
from localrag.runtime.generation import (  # noqa: F401 - engine.* is where callers find them
    STOP_CONTEXT, STOP_EOS, STOP_LENGTH, STOP_MARKER, GenerationStats, StreamEvent, generate,
)
from localrag.runtime.reasoning import FORCED_CLOSE, strip_thinking
from localrag.units import format_size

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue, Defaults
    from localrag.models.hardware import Hardware
    from localrag.models.store import InstalledModel
    from localrag.settings import Settings

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"

def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_threads(sample_s: float = 0.2) -> int:
    """Physical cores, less those other programs keep busy right now.

    llama.cpp's threads meet at a barrier after every operation and spin while they wait; when
    another program holds a core, one descheduled thread stalls them all. Measured on a shared
    2-core machine: 2 threads decoded R1-Distill-Qwen-1.5B at 0.5 tok/s, 1 thread at 15 tok/s.
    An idle machine gets every physical core.
    """
    import psutil

    cores = physical_cores()
    logical = psutil.cpu_count(logical=True) or cores
    busy = psutil.cpu_percent(interval=sample_s) / 100 * logical * cores / logical
    return max(1, min(cores, round(cores - busy + 0.25)))


@dataclass
class Engine:
    """One loaded Llama. Build it with ``Engine.load``; keep it to reuse the model and KV cache."""

    llm: object
    path: Path
    n_ctx: int
    template: str  # "r1" | "gguf"
    n_gpu_layers: int = 0
    n_threads: int = 1
    defaults: "Defaults | None" = field(default=None, repr=False)  # the catalogue's [defaults]
    _stop_ids: frozenset = field(default=frozenset(), repr=False)
    _turn_ids: frozenset = field(default=frozenset(), repr=False)  # stops that are another turn starting
    _marker_ids: dict = field(default_factory=dict, repr=False)
    _formatter: object = field(default=None, repr=False)
    _is_eog: object = field(default=None, repr=False)
    _vocab: object = field(default=None, repr=False)
    _piece_buf: object = field(default=None, repr=False)
    # llama.cpp's context holds one sequence: two threads generating at once (a server with more
    # than one slot) would corrupt each other's KV cache, so generations take turns.
    _busy: object = field(default_factory=threading.Lock, repr=False)

    # --- loading --------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        n_ctx: int,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        template: str = "r1",
        n_batch: int = 512,
        n_ubatch: int = 512,
        flash_attn: bool | None = None,
        verbose: bool = False,
        kv_bytes_per_token: int | None = None,
        repack: bool | None = None,
        check_header: bool = False,
        defaults: "Defaults | None" = None,
    ) -> "Engine":
        """Load a GGUF; LocalragError (not a crash) for a missing/foreign file or too little memory.

        ``n_batch``/``n_ubatch`` stay at llama.cpp's 512: on R1-Distill-Qwen-1.5B Q4_K_M with a
        1024-token prompt (1 thread, best of 3) prefill was 58 tok/s at 512/512 against 40 at
        2048/2048, 48 at 1024/256 and 51 at 256/256. ``verbose`` lets
        llama.cpp's own log through to stderr for debugging. ``repack=False`` turns off llama.cpp's
        CPU weight repacking (``use_extra_bufts``), None leaves llama.cpp's default (on); see
        ``open_engine`` for the trade-off. ``check_header``: walk the whole GGUF header with the
        gguf package first (a second or two on a 150k-token vocabulary; the store does it once
        when a model comes in), else only its magic and version are checked up front.
        ``defaults``: the catalogue's [defaults] (think prefix, stop markers, system prompt
        handling, sampling); None reads them from the configured models.toml.
        """
        path = Path(path)
        if template not in ("r1", "gguf"):
            raise ValueError(f"unknown template {template!r}")
        quick_check_gguf(path)
        if check_header:
            read_gguf(path)
        _check_memory(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, kv_bytes_per_token=kv_bytes_per_token)
        threads = n_threads or default_threads()

        kwargs = dict(
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            verbose=verbose,
        )
        if flash_attn is not None:
            kwargs["flash_attn"] = flash_attn
        extra = {} if repack is None else {"use_extra_bufts": repack}
        try:
            llm = _llama_class()(str(path), extra_model_params=extra, **kwargs)
        except ValueError as exc:
            raise _explain_load_failure(path, exc) from None
        engine = cls(llm=llm, path=path, n_ctx=llm.n_ctx(), template=template, n_gpu_layers=n_gpu_layers,
                     n_threads=threads, defaults=defaults or _configured_defaults())
        try:
            engine._setup_tokens()
        except BaseException:
            engine.close()  # free the weights now, not whenever the GC gets to them
            raise
        return engine

    def _setup_tokens(self) -> None:
        import llama_cpp

        llm = self.llm
        markers = {}
        for text in (BOS, EOS, USER, ASSISTANT, "<think>", "</think>"):
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                markers[text] = ids[0]
        if self.template == "r1":
            missing = [t for t in (USER, ASSISTANT) if t not in markers]
            if missing:
                raise BadFile(
                    f"{self.path.name} has no {' / '.join(missing)} token: it is not a DeepSeek-R1 distill",
                    hint="Import it under the right catalogue entry, or use a model whose template is 'gguf'.",
                )
        self._marker_ids = markers
        eos = llm.token_eos()
        turns: set[int] = set()
        if self.template == "r1":
            # The catalogue's stop markers, and the model starting a reply or a sequence of its own
            # (Ollama's R1 stop list): nothing after any of them is the answer.
            for text in (*self.defaults.need("stop"), ASSISTANT, BOS):
                ids = llm.tokenize(text.encode(), add_bos=False, special=True)
                if len(ids) == 1 and ids[0] != eos:
                    turns.add(ids[0])
        self._turn_ids = frozenset(t for t in turns if t >= 0)
        self._stop_ids = frozenset(t for t in {eos, *turns} if t >= 0)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._vocab = vocab
        # Every other end-of-generation token the vocabulary declares (<|im_end|>, <|eot_id|>, ...).
        self._is_eog = lambda tok, _v=vocab, _f=llama_cpp.llama_vocab_is_eog: _f(_v, tok)
        import ctypes

        self._piece_buf = ctypes.create_string_buffer(256)
        if self.template == "gguf":
            self._formatter = self._gguf_formatter()

    def _gguf_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BadFile(f"{self.path.name} carries no chat template", hint="Use a chat/instruct GGUF.")
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        bos_id = llm.token_bos()
        bos = llm.detokenize([bos_id], special=True).decode("utf-8", "replace") if bos_id >= 0 else ""
        return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- tokens and prompts ------------------------------------------------------------------

    @property
    def reasoning(self) -> bool:
        return self.template == "r1"

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _text(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def format_prompt(self, messages: list[dict]) -> list[int]:
        """The prompt tokens for ``messages``, ending where the model's reply starts."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user turn")
        if self.template == "gguf":
            result = self._formatter(messages=[{"role": m["role"], "content": m["content"]} for m in messages])
            return self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        m = self._marker_ids
        tokens = [self.llm.token_bos()]
        pending_system = ""
        # [defaults] system_prompt = false: the distills were not trained with a system prompt, so
        # its text goes into the next user turn; true: it stays where DeepSeek's template puts it,
        # right after BOS.
        own_system = self.defaults.need("system_prompt")
        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content") or ""
            if role == "system" and own_system and all(x.get("role") == "system" for x in messages[:i]):
                tokens += self._text(content)
            elif role == "system":
                pending_system += content.strip() + "\n\n"
            elif role == "user":
                tokens.append(m[USER])
                tokens += self._text(pending_system + content)
                pending_system = ""
            elif role == "assistant":
                tokens.append(m[ASSISTANT])
                tokens += self._text(strip_thinking(content))
                tokens.append(self.llm.token_eos())
            else:
                raise ValueError(f"unknown role {role!r}")
        tokens.append(m[ASSISTANT])
        tokens += self._think_prefix()
        return tokens

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing).

        llama-cpp-python's detokenize uses a 32-byte buffer and garbles longer tokens (Qwen has
        some), so this calls llama_token_to_piece with room to spare.
        """
        import llama_cpp

        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            import ctypes

            buf = self._piece_buf = ctypes.create_string_buffer(-n + 16)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _think_prefix(self) -> list[int]:
        return self.llm.tokenize(self.defaults.need("think_prefix").encode(), add_bos=False, special=True)

    def _close_tokens(self) -> list[int]:
        return self.llm.tokenize(FORCED_CLOSE.encode(), add_bos=False, special=True)

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens`` the KV cache already holds (what generate() will reuse)."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        n = min(len(cached), len(tokens))
        if n == 0:
            return 0
        import numpy as np

        diff = np.flatnonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))
        prefix = int(diff[0]) if diff.size else n
        # generate() re-evaluates the last prompt token to get fresh logits when all is cached.
        return min(prefix, len(tokens) - 1)

    # --- generation ---------------------------------------------------------------------------

    def stream(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        reasoning_budget: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        top_k: int = 40,
        min_p: float = 0.05,
    ) -> Iterator[StreamEvent]:
        """Stream the reply as thinking/answer events, then one "done" event with the stats.

        ``max_tokens`` bounds the answer; ``reasoning_budget`` the thinking (None: only the
        context bounds it). ``temperature``/``top_p`` None: the catalogue's [defaults] (the model
        card's). The generator can be abandoned at any point (Ctrl-C in the chat): the KV cache
        stays consistent for the next call.
        """
        import time

        t_call = time.perf_counter()
        tokens = self.format_prompt(messages)
        with self._busy:  # released when the generator ends or is abandoned (closed)
            yield from self.stream_tokens(
                tokens, max_tokens=max_tokens, reasoning_budget=reasoning_budget, temperature=temperature,
                top_p=top_p, seed=seed, top_k=top_k, min_p=min_p, _t_call=t_call,
            )

    def stream_tokens(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        reasoning_budget: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        top_k: int = 40,
        min_p: float = 0.05,
        _t_call: float | None = None,
    ) -> Iterator[StreamEvent]:
        """``stream`` for an already formatted prompt (benchmarks, tests)."""
        import time

        temperature = self.defaults.need("temperature") if temperature is None else temperature
        top_p = self.defaults.need("top_p") if top_p is None else top_p
        sample_kw = dict(top_k=top_k, top_p=top_p, min_p=min_p, temp=temperature, repeat_penalty=1.0)
        return generate(self, tokens, max_tokens=max_tokens, reasoning_budget=reasoning_budget,
                        sample_kw=sample_kw, seed=seed, t_call=_t_call or time.perf_counter())


# --- loading helpers ------------------------------------------------------------------------------


def _configured_defaults() -> "Defaults":
    """[defaults] of the models.toml the settings point at (Engine.load without a catalogue)."""
    from localrag.models.catalogue import load_catalogue
    from localrag.settings import load_settings

    return load_catalogue(load_settings().catalogue_path).defaults


@functools.cache
def _llama_class():
    """``llama_cpp.Llama`` taking ``extra_model_params``: llama_model_params fields that Llama()
    has no keyword for (``use_extra_bufts``, CPU weight repacking).

    Llama.__init__ starts from ``self.model_params = llama_model_default_params()``, fills it
    from its keywords and loads the model with it. Here ``model_params`` is a property whose
    setter applies the extra fields to that instance's own struct as it is assigned, so the load
    uses them; no library module is changed and no other Llama sees them.
    """
    import llama_cpp

    class _Llama(llama_cpp.Llama):
        def __init__(self, *args, extra_model_params: dict | None = None, **kwargs):
            self.__dict__["_extra_model_params"] = dict(extra_model_params or {})
            super().__init__(*args, **kwargs)

        @property
        def model_params(self):
            return self.__dict__["_model_params"]

        @model_params.setter
        def model_params(self, params):
            for key, value in self.__dict__.get("_extra_model_params", {}).items():
                setattr(params, key, value)
            self.__dict__["_model_params"] = params

    return _Llama


def _check_memory(path: Path, *, n_ctx: int, n_gpu_layers: int, kv_bytes_per_token: int | None) -> None:
    """Refuse, with the numbers, a model that cannot fit in RAM rather than let the OS thrash.

    The weights are memory-mapped; with no GPU offload every page is touched per token, so the
    whole file plus the KV cache must fit in what the OS can give us.
    """
    import psutil

    if n_gpu_layers != 0:
        return  # the fit (fit.plan_model) splits GPU/CPU memory; see open_engine
    files = shard_paths(path)
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise NotInstalled(f"model shard missing: {missing[0]}", hint="Download or import the model again.",
                           remedy="install_model")
    weights = sum(p.stat().st_size for p in files)
    kv = (kv_bytes_per_token or 0) * n_ctx
    need = weights + kv
    vm = psutil.virtual_memory()
    # Pages of this file already in the page cache count as "available" too.
    can = vm.available + psutil.swap_memory().free // 2
    if need > can:
        raise DoesNotFit(
            f"not enough memory for {path.name}: needs ~{format_size(need)} "
            f"(weights {format_size(weights)} + KV cache {format_size(kv)}), {format_size(vm.available)} available",
            hint="Pick a smaller model or quantization, or a smaller context.",
            remedy="doctor",
        )


def _explain_load_failure(path: Path, exc: Exception) -> LocalragError:
    """llama.cpp said no: find out why with the gguf package and say it plainly."""
    try:
        info = read_gguf(path)  # raises BadInput for damaged/truncated files
    except LocalragError as err:
        return err
    arch = info.arch or "unknown"
    return BadFile(
        f"llama.cpp could not load {path.name} (architecture {arch}): {exc}",
        hint="The file may need a newer llama-cpp-python, or be damaged: check the installed models.",
        remedy="verify_models",
    )


# --- the process-level cache callers keep --------------------------------------------------------


def open_engine(
    settings: "Settings",
    catalogue: "Catalogue",
    model: "InstalledModel",
    *,
    hardware: "Hardware",
    ctx: int | None = None,
    verbose: bool | None = None,
) -> Engine:
    """Load an installed model with the offload and context the fit picks for ``hardware``.

    Refuses, with the numbers, a model the fit says does not fit at all.

    CPU weight repacking: llama.cpp repacks Q4_K/Q4_0 weights for its AVX2/AVX-512 kernels by
    default, and that default is kept. Measured on the quiet 2-core target (BENCHMARKS.md,
    R1-Distill-Qwen-1.5B Q4_K_M, 2 threads, 540-token prompt): repacking off makes prefill 1.57x
    faster (207 vs 132 tok/s) but decode 20% slower (24.5 vs 31.5 tok/s), so it only pays when the
    prompt is over ~3.3x the generated tokens; an R1 answer (hundreds of thinking tokens, then the
    answer) after a ~1.8k-token RAG prompt, and every follow-up (KV reuse leaves ~1k new prompt
    tokens), finish sooner with it on. (Earlier 1-thread figures taken while the machine was shared
    showed +70% prefill for -7% decode; they did not hold on the quiet machine.)
    ``settings.generation.repack = false`` turns it off (short answers to long prompts).
    ``verbose`` None: the LOCALRAG_LLAMA_LOG environment variable (1 shows llama.cpp's log).
    """
    from localrag.models import fit

    spec = model.spec
    want_ctx = ctx or settings.generation.ctx
    cand = fit.plan_model(catalogue, hardware, spec.id, model.quant, ctx=want_ctx, embedder=settings.embedder)
    if not cand.fits:
        raise DoesNotFit(
            f"{model.label} does not fit this machine: needs ~{format_size(cand.estimated_bytes)}, "
            f"{format_size(cand.budget_bytes)} usable" + (f" ({cand.note})" if cand.note else ""),
            hint="Pick a smaller model or quantization, or a smaller context.",
            remedy="doctor",
        )
    n_ctx = min(want_ctx or cand.ctx or catalogue.defaults.need("fallback_ctx"), spec.ctx_max)
    if verbose is None:
        verbose = os.environ.get("LOCALRAG_LLAMA_LOG", "") not in ("", "0")
    params = dict(
        n_ctx=n_ctx,
        n_gpu_layers=cand.n_gpu_layers,
        n_threads=settings.generation.threads,
        template=spec.template,
        verbose=verbose,
        kv_bytes_per_token=spec.kv_bytes_per_token,
        repack=settings.generation.repack,  # None: llama.cpp's default (on)
        check_header=not getattr(model, "header_checked", False),
        defaults=catalogue.defaults,
    )
    return Engine.load(model.path, **params)
