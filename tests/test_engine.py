"""The engine on real GGUFs: the SmolLM2 starter, and random-weight R1-format Qwen2 models
quantized by llama.cpp (tiny variant of R1-Distill-Qwen-1.5B, Q3_K_M and Q4_K_M)."""

from __future__ import annotations

import pytest

from localrag.errors import LocalragError as UserError
from localrag.runtime.engine import ASSISTANT, BOS, EOS, USER, Engine
from tests.synthgguf import make_gguf

SAMPLE = dict(temperature=0.6, top_p=0.95, seed=7)
# One thread: the test machine's 2 cores are shared, and llama.cpp's spinning thread pool slows
# down 20x when its threads get descheduled. Production uses the physical core count.
T1 = dict(n_threads=1)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    with Engine.load(smollm2_gguf, n_ctx=2048, template="gguf", **T1) as engine:
        yield engine


@pytest.fixture(scope="module", params=["Q3_K_M", "Q4_K_M"])
def r1(request):
    path = make_gguf("r1-distill-qwen-1.5b", request.param, tiny=True)
    with Engine.load(path, n_ctx=1024, **T1) as engine:
        yield engine


def collect(events):
    events = list(events)
    assert events[-1].kind == "done" and all(e.kind != "done" for e in events[:-1])
    thinking = "".join(e.text for e in events if e.kind == "thinking")
    answer = "".join(e.text for e in events if e.kind == "answer")
    return thinking, answer, events[-1].stats, events


# --- SmolLM2: a real instruct model, its GGUF's own template, no thinking -----------------------


def test_smollm2_streams_an_answer_and_stops_by_itself(smollm2):
    prompt = smollm2.llm.detokenize(smollm2.format_prompt([{"role": "user", "content": "Hi"}]), special=True)
    assert b"<|im_start|>user\nHi<|im_end|>" in prompt  # the ChatML template stored in the GGUF
    thinking, answer, stats, events = collect(
        smollm2.stream([{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                       max_tokens=64, reasoning_budget=16, temperature=0.0, top_p=0.95)
    )
    assert thinking == "" and stats.reasoning_tokens == 0
    assert "Paris" in answer
    assert len([e for e in events if e.kind == "answer"]) > 1  # streamed, not one lump
    assert stats.stop_reason == "eos"
    assert stats.prompt_tokens > 10 and stats.gen_tokens > 1
    assert stats.prompt_s > 0 and stats.ttft_s >= stats.prompt_s and stats.gen_s > 0
    assert stats.decode_tps > 0 and stats.prefill_tps > 0


def test_smollm2_max_tokens(smollm2):
    _, answer, stats, _ = collect(
        smollm2.stream([{"role": "user", "content": "Count from 1 to 100, one number per line."}],
                       max_tokens=5, reasoning_budget=None, **SAMPLE)
    )
    assert stats.stop_reason == "length" and stats.gen_tokens == 5 and answer


def test_follow_up_reuses_the_kv_cache_prefix(smollm2):
    first = [{"role": "user", "content": "Name a fruit that is yellow. One word."}]
    _, answer, stats1, _ = collect(smollm2.stream(first, max_tokens=8, reasoning_budget=None, **SAMPLE))
    follow = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And a red one?"}]
    _, _, stats2, _ = collect(smollm2.stream(follow, max_tokens=8, reasoning_budget=None, **SAMPLE))
    assert stats2.cached_tokens >= stats1.prompt_tokens  # the whole first prompt was not re-evaluated
    assert stats2.cached_tokens < stats2.prompt_tokens
    # The same prompt again: everything but the last token comes from the cache.
    _, _, stats3, _ = collect(smollm2.stream(follow, max_tokens=4, reasoning_budget=None, **SAMPLE))
    assert stats3.cached_tokens == stats3.prompt_tokens - 1
    # A different conversation shares only the template's opening.
    other = [{"role": "user", "content": "Totally different question?"}]
    _, _, stats4, _ = collect(smollm2.stream(other, max_tokens=4, reasoning_budget=None, **SAMPLE))
    assert 0 < stats4.cached_tokens < stats1.prompt_tokens


# --- R1 format on random-weight Qwen2 GGUFs ------------------------------------------------------


def test_r1_prompt_markers(r1):
    ids = {t: r1.llm.tokenize(t.encode(), add_bos=False, special=True)[0] for t in (BOS, EOS, USER, ASSISTANT, "<think>")}
    msgs = [
        {"role": "user", "content": "Q1 <｜User｜>"},
        {"role": "assistant", "content": "<think>\nold reasoning\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
    ]
    toks = r1.format_prompt(msgs)
    text = r1.llm.detokenize(toks, special=True).decode()
    assert text == f"{BOS}{USER}Q1 <｜User｜>{ASSISTANT}A1{EOS}{USER}Q2{ASSISTANT}<think>\n"
    assert toks[0] == ids[BOS] and toks[1] == ids[USER]
    assert toks.count(ids[USER]) == 2  # the user's "<｜User｜>" text is not a marker token
    assert toks[-2:] == [ids["<think>"], r1.llm.tokenize(b"\n", add_bos=False)[0]]
    assert "old reasoning" not in text
    # A system message is folded into the first user turn (no system prompt for the distills).
    sys_text = r1.llm.detokenize(r1.format_prompt([{"role": "system", "content": "Be brief."}, msgs[2]]), special=True).decode()
    assert sys_text == f"{BOS}{USER}Be brief.\n\nQ2{ASSISTANT}<think>\n"


def test_r1_budget_closes_thinking_and_the_answer_follows(r1):
    msgs = [{"role": "user", "content": "Why is the sky blue?"}]
    thinking, answer, stats, events = collect(r1.stream(msgs, max_tokens=6, reasoning_budget=10, **SAMPLE))
    assert stats.reasoning_tokens == 10 and stats.thinking_closed_by == "budget"
    assert stats.gen_tokens == 16 and stats.stop_reason == "length"
    kinds = [e.kind for e in events[:-1]]
    assert "thinking" in kinds and "answer" in kinds
    assert kinds.index("answer") > max(i for i, k in enumerate(kinds) if k == "thinking")
    # The model saw its thinking closed: "\n</think>\n\n" sits in the context after 10 tokens.
    close = r1.llm.tokenize(b"\n</think>\n\n", add_bos=False, special=True)
    ctx = r1.llm.input_ids[: r1.llm.n_tokens].tolist()
    start = stats.prompt_tokens + 10
    assert ctx[start : start + len(close)] == close


def test_r1_budget_zero_skips_thinking(r1):
    thinking, answer, stats, _ = collect(
        r1.stream([{"role": "user", "content": "Hi"}], max_tokens=4, reasoning_budget=0, **SAMPLE)
    )
    assert thinking == "" and stats.reasoning_tokens == 0 and stats.gen_tokens == 4


@pytest.mark.parametrize("favour,reason", [(EOS, "eos"), (USER, "stop")])
def test_r1_stops_on_end_of_sentence_and_next_user_turn(favour, reason):
    # A model that (almost) always emits `favour`: it ends while still thinking, the engine
    # closes the thinking and asks for the answer, and the model ends again -> stop.
    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True, favour=favour)
    with Engine.load(path, n_ctx=512, **T1) as engine:
        thinking, answer, stats, _ = collect(
            engine.stream([{"role": "user", "content": "Hi"}], max_tokens=50, reasoning_budget=50, **SAMPLE)
        )
    assert stats.stop_reason == reason
    assert stats.thinking_closed_by == "end"
    assert stats.gen_tokens == 0 and thinking == "" and answer == ""


def test_prompt_longer_than_the_context(r1):
    long = "word " * 1200
    with pytest.raises(UserError) as err:
        list(r1.stream([{"role": "user", "content": long}], max_tokens=4, reasoning_budget=4, **SAMPLE))
    assert "context holds 1024" in err.value.message


def test_context_full_stops_generation():
    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    with Engine.load(path, n_ctx=256, **T1) as engine:
        _, _, stats, _ = collect(
            engine.stream([{"role": "user", "content": "Hi"}], max_tokens=500, reasoning_budget=None, **SAMPLE)
        )
        assert engine.n_ctx == 256
        assert engine.llm.n_tokens <= 256
    assert stats.stop_reason == "context"
    assert stats.prompt_tokens + stats.gen_tokens <= 256


# --- load errors ------------------------------------------------------------------------------


def test_missing_foreign_and_truncated_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Engine.load(tmp_path / "nope.gguf", n_ctx=512)
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("these are not weights\n" * 10)
    with pytest.raises(UserError, match="not a GGUF"):
        Engine.load(foreign, n_ctx=512)
    src = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    cut = tmp_path / "cut.gguf"
    with src.open("rb") as fh:
        cut.write_bytes(fh.read(src.stat().st_size // 2))
    with pytest.raises(UserError, match="truncated"):
        Engine.load(cut, n_ctx=512)


def test_r1_template_needs_r1_tokens(smollm2_gguf):
    with pytest.raises(UserError, match="not a DeepSeek-R1 distill"):
        Engine.load(smollm2_gguf, n_ctx=512, template="r1")


def test_refuses_a_model_that_does_not_fit_in_memory():
    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    with pytest.raises(UserError) as err:
        Engine.load(path, n_ctx=131072, kv_bytes_per_token=8 << 20)  # a 1 TiB KV cache
    assert "not enough memory" in err.value.message and "GiB available" in err.value.message


def test_repack_off_loads_and_generates():
    import llama_cpp.llama_cpp as C

    original = C.llama_model_default_params
    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    with Engine.load(path, n_ctx=256, repack=False, **T1) as engine:
        assert engine.llm.model_params.use_extra_bufts is False  # the load used it
        _, _, stats, _ = collect(
            engine.stream([{"role": "user", "content": "Hi"}], max_tokens=3, reasoning_budget=3, **SAMPLE)
        )
    assert stats.gen_tokens == 6
    assert C.llama_model_default_params is original  # the library module is never patched


def test_thinking_that_ends_without_an_answer_becomes_the_answer():
    # A model that ends its reply about every other token: some runs think a word, stop, get the
    # thinking closed for them and stop again -> the thinking text is what the user gets.
    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True, favour=EOS, favour_logit=12)
    seen = 0
    with Engine.load(path, n_ctx=256, **T1) as engine:
        for seed in range(40):
            thinking, answer, stats, _ = collect(
                engine.stream([{"role": "user", "content": "Hi"}], max_tokens=20, reasoning_budget=20,
                              temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=seed)
            )
            assert stats.stop_reason == "eos"
            if stats.answer_from_thinking:
                seen += 1
                assert stats.thinking_closed_by == "end" and answer == thinking.strip() != ""
            elif thinking.strip() and stats.thinking_closed_by == "end":
                assert answer  # it did answer after the forced close
    assert seen >= 3


def test_default_threads_within_the_physical_cores():
    from localrag.runtime.engine import default_threads, physical_cores

    assert 1 <= default_threads(sample_s=0.05) <= physical_cores()


def test_r1_follow_up_reuses_the_prefix(r1):
    first = [{"role": "user", "content": "Sources: [1] Milvus listens on port 19530.\n\nWhich port?"}]
    _, answer, stats1, _ = collect(r1.stream(first, max_tokens=4, reasoning_budget=4, **SAMPLE))
    follow = first + [{"role": "assistant", "content": answer or "19530"}, {"role": "user", "content": "And gRPC?"}]
    _, _, stats2, _ = collect(r1.stream(follow, max_tokens=4, reasoning_budget=4, **SAMPLE))
    # Everything up to the first reply's "<｜Assistant｜>" is reused; only "<think>\n" differs.
    assert stats2.cached_tokens == stats1.prompt_tokens - 2


def test_check_header_refuses_a_truncated_file_before_llama_cpp(tmp_path):
    src = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    cut = tmp_path / "cut.gguf"
    with src.open("rb") as fh:
        cut.write_bytes(fh.read(src.stat().st_size - 1000))
    with pytest.raises(UserError, match="truncated"):
        Engine.load(cut, n_ctx=256, check_header=True, **T1)
