"""The sampling loop of one reply: thinking and answer events, the reasoning budget, the stats.

Generation runs on ``Llama.generate`` -- llama-cpp-python's own eval/sample loop -- so the
per-token cost is the library's plus one detokenize and a few comparisons. When the reasoning
budget runs out (or the model ends while still thinking) the loop evaluates "\\n</think>\\n\\n"
as if the model had written it and goes on sampling: the user always gets an answer.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from localrag.errors import DoesNotFit
from localrag.runtime.reasoning import ANSWER, THINKING, ReasoningSplitter

if TYPE_CHECKING:
    from localrag.runtime.engine import Engine

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


def generate(
    engine: "Engine",
    tokens: list[int],
    *,
    max_tokens: int,
    reasoning_budget: int | None,
    sample_kw: dict,
    seed: int | None,
    t_call: float,
) -> Iterator[StreamEvent]:
    """Sample a reply to the formatted prompt ``tokens`` on ``engine``'s model."""
    room = engine.n_ctx - len(tokens)
    if room < 2:
        raise DoesNotFit(
            f"the prompt has {len(tokens)} tokens but the context holds {engine.n_ctx}",
            hint="Ask a shorter question, use fewer sources, or a larger context.",
        )
    yield from _Run(engine, tokens, max_tokens, reasoning_budget, sample_kw, seed, t_call).run()


class _Run:
    """One call's state; ``run`` is the generator the caller consumes."""

    def __init__(self, engine, tokens, max_tokens, reasoning_budget, sample_kw, seed, t_call):
        import llama_cpp

        self.llm, self.tokens, self.max_tokens, self.sample_kw, self.seed, self.t_call = (
            engine.llm, tokens, max_tokens, sample_kw, seed, t_call)
        self.stats = GenerationStats(prompt_tokens=len(tokens), cached_tokens=engine.cached_prefix(tokens))
        self.llm.set_seed(seed if seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        thinking = engine.reasoning
        self.splitter = ReasoningSplitter(started_in_thinking=thinking)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.close_ids = engine._close_tokens() if thinking else []
        # Keep room to close the thinking at any point.
        self.limit_ctx = engine.n_ctx - len(self.close_ids) - 1
        self.budget = reasoning_budget if thinking else None
        self.stop_ids, self.is_eog, self.to_piece = engine._stop_ids, engine._is_eog, engine.piece
        self.turn_markers = engine._turn_ids if thinking else frozenset()
        self.generated: list[int] = []
        self.thought: list[str] = []
        self.answered = False
        self.answer_tokens = 0
        self.t_first = 0.0
        self.t_gen = 0.0

    def run(self) -> Iterator[StreamEvent]:
        stats = self.stats
        if self.budget is not None and self.budget <= 0:
            # No thinking at all: the reply starts closed, as DeepSeek's "<think>\n\n</think>" bypass.
            self.tokens = self.tokens + self.close_ids
            stats.prompt_tokens = len(self.tokens)
            stats.thinking_closed_by = "budget"
            self.splitter.close_thinking()
        self.t_gen = time.perf_counter()
        gen = self.llm.generate(self.tokens, **self.sample_kw)
        try:
            while True:
                restart = yield from self._sample(gen)
                if restart is None:
                    break
                gen.close()
                for p in self.splitter.close_thinking():
                    self.thought.append(p.text)
                    yield StreamEvent(p.kind, p.text)
                self.tokens, self.generated = restart, []
                if len(self.tokens) >= self.limit_ctx or self.max_tokens <= 0:
                    stats.stop_reason = STOP_CONTEXT if self.max_tokens > 0 else STOP_LENGTH
                    break
                if self.seed is not None:
                    # generate() re-seeds its sampler: a new seed, or the answer would replay the
                    # random draws that started the thinking.
                    self.llm.set_seed((self.seed + 1) & 0xFFFFFFFF)
                # Evaluates the last sampled token and the closing tags, then samples the answer.
                gen = self.llm.generate(self.tokens, **self.sample_kw)
        finally:
            gen.close()
        yield from self._finish()

    def _sample(self, gen) -> Iterator[StreamEvent]:
        """Consume ``gen`` until a stop; returns the tokens to restart from when the thinking
        has to be closed for the model, else None."""
        stats, splitter = self.stats, self.splitter
        for tok in gen:
            if not self.t_first:
                self.t_first = time.perf_counter()
                stats.prompt_s = self.t_first - self.t_gen
                stats.ttft_s = self.t_first - self.t_call
            if tok in self.stop_ids or self.is_eog(tok):
                if splitter.in_thinking and stats.thinking_closed_by is None:
                    # Ended while thinking: close it and ask for the answer.
                    stats.thinking_closed_by = "end"
                    return self.tokens + self.generated + self.close_ids
                stats.stop_reason = STOP_MARKER if tok in self.turn_markers else STOP_EOS
                return None
            self.generated.append(tok)
            stats.gen_tokens += 1
            was_thinking = splitter.in_thinking
            piece = self.decoder.decode(self.to_piece(tok))
            for p in splitter.feed(piece) if piece else ():
                if p.kind == THINKING:
                    self.thought.append(p.text)
                else:
                    self.answered = True
                yield StreamEvent(p.kind, p.text)
            if was_thinking:
                stats.reasoning_tokens += 1
                if not splitter.in_thinking and stats.thinking_closed_by is None:
                    stats.thinking_closed_by = "model"
            else:
                self.answer_tokens += 1
            if splitter.in_thinking and self.budget is not None and stats.reasoning_tokens >= self.budget:
                stats.thinking_closed_by = "budget"
                return self.tokens + self.generated + self.close_ids
            if self.answer_tokens >= self.max_tokens:
                stats.stop_reason = STOP_LENGTH
                return None
            if len(self.tokens) + len(self.generated) >= self.limit_ctx:
                stats.stop_reason = STOP_CONTEXT
                return None
        stats.stop_reason = stats.stop_reason or STOP_EOS
        return None

    def _finish(self) -> Iterator[StreamEvent]:
        stats = self.stats
        tail = self.decoder.decode(b"", final=True)
        for p in self.splitter.feed(tail) + self.splitter.finish():
            if p.kind == THINKING:
                self.thought.append(p.text)
            else:
                self.answered = True
            yield StreamEvent(p.kind, p.text)
        if not self.answered and stats.thinking_closed_by == "end" and "".join(self.thought).strip():
            # Distills sometimes answer inside the forced <think> and stop; an empty answer
            # would hide a usable reply, so the thinking text is the answer.
            stats.answer_from_thinking = True
            yield StreamEvent(ANSWER, "".join(self.thought).strip())
        stats.gen_s = time.perf_counter() - self.t_first if self.t_first else 0.0
        yield StreamEvent("done", stats=stats)
