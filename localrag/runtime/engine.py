"""One loaded GGUF model (llama-cpp-python): the R1 prompt format, streaming, KV prefix reuse.

Keep the ``Engine`` object to keep the model *and* its KV cache: the next call that shares a
prompt prefix (a follow-up question, the same sources) only evaluates the new tokens.

Prompt format. The R1 distills get DeepSeek's model-card format whatever template the GGUF
carries: BOS, ``<｜User｜>`` turns holding every instruction (no system prompt), earlier answers
without their thinking closed by ``<｜end▁of▁sentence｜>``, and the reply forced to start with
``<think>\\n``. Markers are tokenized as special tokens, message text is not, so a document that
contains "<｜User｜>" cannot fake a turn. Other models (the SmolLM2 starter) use the chat template
stored in their GGUF and do not think.

Generation runs on ``Llama.generate`` -- llama-cpp-python's own eval/sample loop -- so the
per-token cost is the library's plus one detokenize and a few comparisons. When the reasoning
budget runs out (or the model ends while still thinking) the engine evaluates "\\n</think>\\n\\n"
as if the model had written it and goes on sampling: the user always gets an answer.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from localrag.errors import LocalragError
from localrag.runtime.reasoning import ANSWER, FORCED_CLOSE, THINKING, ReasoningSplitter, strip_thinking

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue
    from localrag.models.store import InstalledModel
    from localrag.settings import Settings

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_PREFIX = "<think>\n"

# Stop reasons in GenerationStats.
STOP_EOS = "eos"  # the model ended its reply
STOP_MARKER = "stop"  # an R1 model started another turn (<｜User｜>, <｜Assistant｜>)
STOP_LENGTH = "length"  # max_tokens answer tokens
STOP_CONTEXT = "context"  # the context window is full


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, reused from the previous call's KV cache
    prompt_s: float = 0.0  # prefill of the uncached prompt tokens (+ the first sample)
    ttft_s: float = 0.0  # from the call to the first generated token
    gen_tokens: int = 0  # every sampled token, thinking included
    gen_s: float = 0.0  # from the first generated token to the last
    reasoning_tokens: int = 0
    stop_reason: str = ""
    thinking_closed_by: str | None = None  # "model" | "budget" | "end" (model stopped while thinking)
    # The model "thought" its answer and ended without one: the thinking text was sent as the answer.
    answer_from_thinking: bool = False

    @property
    def prefill_tps(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return (self.gen_tokens - 1) / self.gen_s if self.gen_tokens > 1 and self.gen_s > 0 else 0.0

    def as_dict(self) -> dict:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["prefill_tps"] = round(self.prefill_tps, 2)
        data["decode_tps"] = round(self.decode_tps, 2)
        return data


@dataclass
class StreamEvent:
    kind: str  # "thinking" | "answer" | "done"
    text: str = ""
    stats: GenerationStats | None = None


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
    _stop_ids: frozenset = field(default=frozenset(), repr=False)
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
        """
        from localrag.models.store import quick_check_gguf, read_gguf

        path = Path(path)
        if template not in ("r1", "gguf"):
            raise ValueError(f"unknown template {template!r}")
        quick_check_gguf(path)
        if check_header:
            read_gguf(path)
        _check_memory(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, kv_bytes_per_token=kv_bytes_per_token)
        threads = n_threads or default_threads()

        import llama_cpp

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
        try:
            with _model_params(**({} if repack is None else {"use_extra_bufts": repack})):
                llm = llama_cpp.Llama(str(path), **kwargs)
        except ValueError as exc:
            raise _explain_load_failure(path, exc) from None
        engine = cls(llm=llm, path=path, n_ctx=llm.n_ctx(), template=template, n_gpu_layers=n_gpu_layers, n_threads=threads)
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
                raise LocalragError(
                    f"{self.path.name} has no {' / '.join(missing)} token: it is not a DeepSeek-R1 distill",
                    hint="import it under the right catalogue entry, or use a model whose template is 'gguf'",
                )
        self._marker_ids = markers
        stops = {llm.token_eos()}
        if self.template == "r1":
            # The model starting another turn (Ollama's R1 stop list): nothing after it is the answer.
            stops.update(markers[t] for t in (USER, ASSISTANT, BOS) if t in markers)
        self._stop_ids = frozenset(t for t in stops if t >= 0)
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
            raise LocalragError(f"{self.path.name} carries no chat template", hint="use a chat/instruct GGUF")
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
        for msg in messages:
            role, content = msg.get("role"), msg.get("content") or ""
            if role == "system":
                # The distills were not trained with a system prompt: fold it into the next user turn.
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
        return self.llm.tokenize(THINK_PREFIX.encode(), add_bos=False, special=True)

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
        temperature: float,
        top_p: float,
        seed: int | None = None,
        top_k: int = 40,
        min_p: float = 0.05,
    ) -> Iterator[StreamEvent]:
        """Stream the reply as thinking/answer events, then one "done" event with the stats.

        ``max_tokens`` bounds the answer; ``reasoning_budget`` the thinking (None: only the
        context bounds it). The generator can be abandoned at any point (Ctrl-C in the chat):
        the KV cache stays consistent for the next call.
        """
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
        temperature: float,
        top_p: float,
        seed: int | None = None,
        top_k: int = 40,
        min_p: float = 0.05,
        _t_call: float | None = None,
    ) -> Iterator[StreamEvent]:
        """``stream`` for an already formatted prompt (benchmarks, tests)."""
        import llama_cpp

        t_call = _t_call or time.perf_counter()
        llm = self.llm
        room = self.n_ctx - len(tokens)
        if room < 2:
            raise LocalragError(
                f"the prompt has {len(tokens)} tokens but the context holds {self.n_ctx}",
                hint="ask a shorter question, use fewer sources (-k), or a larger context (--ctx)",
            )
        stats = GenerationStats(prompt_tokens=len(tokens), cached_tokens=self.cached_prefix(tokens))
        llm.set_seed(seed if seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        thinking = self.reasoning
        splitter = ReasoningSplitter(started_in_thinking=thinking)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        close_ids = self._close_tokens() if thinking else []
        # Keep room to close the thinking at any point.
        limit_ctx = self.n_ctx - len(close_ids) - 1
        budget = reasoning_budget if thinking else None
        stop_ids, is_eog, to_piece = self._stop_ids, self._is_eog, self.piece
        turn_markers = {self._marker_ids[t] for t in (USER, ASSISTANT, BOS) if t in self._marker_ids and thinking}
        sample_kw = dict(top_k=top_k, top_p=top_p, min_p=min_p, temp=temperature, repeat_penalty=1.0)

        generated: list[int] = []
        thought: list[str] = []
        answered = False
        answer_tokens = 0
        t_first = 0.0
        if budget is not None and budget <= 0:
            # No thinking at all: the reply starts closed, as DeepSeek's "<think>\n\n</think>" bypass.
            tokens = tokens + close_ids
            stats.prompt_tokens = len(tokens)
            stats.thinking_closed_by = "budget"
            splitter.close_thinking()
        t_gen = time.perf_counter()
        gen = llm.generate(tokens, **sample_kw)
        try:
            while True:
                restart = None
                for tok in gen:
                    if not t_first:
                        t_first = time.perf_counter()
                        stats.prompt_s = t_first - t_gen
                        stats.ttft_s = t_first - t_call
                    if tok in stop_ids or is_eog(tok):
                        if splitter.in_thinking and stats.thinking_closed_by is None:
                            # Ended while thinking: close it and ask for the answer.
                            stats.thinking_closed_by = "end"
                            restart = tokens + generated + close_ids
                            break
                        stats.stop_reason = STOP_MARKER if tok in turn_markers else STOP_EOS
                        break
                    generated.append(tok)
                    stats.gen_tokens += 1
                    was_thinking = splitter.in_thinking
                    piece = decoder.decode(to_piece(tok))
                    for p in splitter.feed(piece) if piece else ():
                        if p.kind == THINKING:
                            thought.append(p.text)
                        else:
                            answered = True
                        yield StreamEvent(p.kind, p.text)
                    if was_thinking:
                        stats.reasoning_tokens += 1
                        if not splitter.in_thinking and stats.thinking_closed_by is None:
                            stats.thinking_closed_by = "model"
                    else:
                        answer_tokens += 1
                    if splitter.in_thinking and budget is not None and stats.reasoning_tokens >= budget:
                        stats.thinking_closed_by = "budget"
                        restart = tokens + generated + close_ids
                        break
                    if answer_tokens >= max_tokens:
                        stats.stop_reason = STOP_LENGTH
                        break
                    if len(tokens) + len(generated) >= limit_ctx:
                        stats.stop_reason = STOP_CONTEXT
                        break
                else:
                    stats.stop_reason = stats.stop_reason or STOP_EOS
                if restart is None:
                    break
                gen.close()
                for p in splitter.close_thinking():
                    thought.append(p.text)
                    yield StreamEvent(p.kind, p.text)
                tokens, generated = restart, []
                if len(tokens) >= limit_ctx or max_tokens <= 0:
                    stats.stop_reason = STOP_CONTEXT if max_tokens > 0 else STOP_LENGTH
                    break
                if seed is not None:
                    # generate() re-seeds its sampler: a new seed, or the answer would replay the
                    # random draws that started the thinking.
                    llm.set_seed((seed + 1) & 0xFFFFFFFF)
                # Evaluates the last sampled token and the closing tags, then samples the answer.
                gen = llm.generate(tokens, **sample_kw)
        finally:
            gen.close()
        tail = decoder.decode(b"", final=True)
        for p in splitter.feed(tail) + splitter.finish():
            if p.kind == THINKING:
                thought.append(p.text)
            else:
                answered = True
            yield StreamEvent(p.kind, p.text)
        if not answered and stats.thinking_closed_by == "end" and "".join(thought).strip():
            # Distills sometimes answer inside the forced <think> and stop; an empty answer
            # would hide a usable reply, so the thinking text is the answer.
            stats.answer_from_thinking = True
            yield StreamEvent(ANSWER, "".join(thought).strip())
        stats.gen_s = time.perf_counter() - t_first if t_first else 0.0
        yield StreamEvent("done", stats=stats)

    def complete(self, messages: list[dict], **kwargs) -> tuple[str, str, GenerationStats]:
        """Non-streaming convenience: (thinking, answer, stats)."""
        thinking, answer, stats = [], [], None
        for ev in self.stream(messages, **kwargs):
            if ev.kind == THINKING:
                thinking.append(ev.text)
            elif ev.kind == ANSWER:
                answer.append(ev.text)
            else:
                stats = ev.stats
        return "".join(thinking), "".join(answer), stats


# --- loading helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _model_params(**fields):
    """Set llama_model_params fields that ``Llama()`` has no keyword for, for one load.

    Llama() builds its params from llama_model_default_params(); wrap that while the model
    loads and put it back right after (loads are not concurrent in localrag).
    """
    import llama_cpp.llama_cpp as C

    if not fields or all(getattr(C.llama_model_default_params(), k) == v for k, v in fields.items()):
        yield
        return
    original = C.llama_model_default_params

    def patched():
        params = original()
        for k, v in fields.items():
            setattr(params, k, v)
        return params

    C.llama_model_default_params = patched
    try:
        yield
    finally:
        C.llama_model_default_params = original


def _shard_paths(path: Path) -> list[Path]:
    """All files of a split GGUF (name-00001-of-00003.gguf), or just ``path``."""
    import re

    m = re.match(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", path.name)
    if not m:
        return [path]
    total = int(m.group(3))
    return [path.with_name(f"{m.group(1)}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]


def _check_memory(path: Path, *, n_ctx: int, n_gpu_layers: int, kv_bytes_per_token: int | None) -> None:
    """Refuse, with the numbers, a model that cannot fit in RAM rather than let the OS thrash.

    The weights are memory-mapped; with no GPU offload every page is touched per token, so the
    whole file plus the KV cache must fit in what the OS can give us.
    """
    import psutil

    if n_gpu_layers != 0:
        return  # the fit (fit.plan_model) splits GPU/CPU memory; see open_engine
    files = _shard_paths(path)
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise LocalragError(f"model shard missing: {missing[0]}", hint="pull or import the model again")
    weights = sum(p.stat().st_size for p in files)
    kv = (kv_bytes_per_token or 0) * n_ctx
    need = weights + kv
    vm = psutil.virtual_memory()
    # Pages of this file already in the page cache count as "available" too.
    can = vm.available + psutil.swap_memory().free // 2
    if need > can:
        raise LocalragError(
            f"not enough memory for {path.name}: needs ~{need / 2**30:.1f} GiB "
            f"(weights {weights / 2**30:.1f} + KV cache {kv / 2**30:.1f}), {vm.available / 2**30:.1f} GiB available",
            hint="pick a smaller model or quantization (`localrag doctor`), or a smaller context (--ctx)",
        )


def _explain_load_failure(path: Path, exc: Exception) -> LocalragError:
    """llama.cpp said no: find out why with the gguf package and say it plainly."""
    from localrag.models.store import read_gguf

    try:
        info = read_gguf(path)  # raises a LocalragError for damaged/truncated files
    except LocalragError as err:
        return err
    arch = info.arch or "unknown"
    return LocalragError(
        f"llama.cpp could not load {path.name} (architecture {arch}): {exc}",
        hint="the file may need a newer llama-cpp-python, or be damaged: `localrag models verify`",
    )


# --- the process-level cache callers keep --------------------------------------------------------


class EngineCache:
    """Holds at most one loaded Engine; ``get`` returns it again while the parameters match.

    The chat REPL keeps one of these so a follow-up reuses both the model and its KV cache; a
    different model or context closes the old one first (two models rarely fit in RAM).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._engine: Engine | None = None

    def get(self, path: Path, **params) -> Engine:
        key = (str(Path(path).resolve()), tuple(sorted(params.items())))
        if self._engine is not None and self._key == key:
            return self._engine
        self.close()
        self._engine = Engine.load(Path(path), **params)
        self._key = key
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._key = None, None


def open_engine(
    settings: "Settings",
    catalogue: "Catalogue",
    model: "InstalledModel",
    *,
    hardware=None,
    cache: EngineCache | None = None,
    ctx: int | None = None,
    verbose: bool | None = None,
) -> Engine:
    """Load an installed model with the offload and context the fit picks for this machine.

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
    from localrag.models import hardware as hw

    spec = model.spec
    hardware = hardware or hw.detect(settings.models_dir)
    want_ctx = ctx or settings.generation.ctx
    cand = fit.plan_model(catalogue, hardware, spec.id, model.quant, ctx=want_ctx, embedder=settings.embedder)
    if not cand.fits:
        raise LocalragError(
            f"{model.label} does not fit this machine: needs ~{cand.estimated_bytes / 2**30:.1f} GiB, "
            f"{cand.budget_bytes / 2**30:.1f} GiB usable" + (f" ({cand.note})" if cand.note else ""),
            hint="`localrag doctor` shows what fits; pick a smaller model or quantization with --model, or a smaller --ctx",
        )
    n_gpu_layers = cand.n_gpu_layers
    n_ctx = want_ctx or cand.ctx
    n_ctx = min(n_ctx or 4096, spec.ctx_max)
    repack = getattr(settings.generation, "repack", None)  # None: llama.cpp's default (on)
    if verbose is None:
        verbose = os.environ.get("LOCALRAG_LLAMA_LOG", "") not in ("", "0")
    params = dict(
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        n_threads=settings.generation.threads,
        template=spec.template,
        verbose=verbose,
        kv_bytes_per_token=spec.kv_bytes_per_token,
        repack=repack,
        check_header=not getattr(model, "header_checked", False),
    )
    if cache is not None:
        return cache.get(model.path, **params)
    return Engine.load(model.path, **params)
