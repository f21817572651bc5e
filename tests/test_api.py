"""The public API on real parts: the README's example as a script, and LocalRAG's promises -
one handle per knowledge base (ingest while searching in one process), typed events, errors as
classes, hardware given instead of detected, nothing printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import localrag
from localrag import (
    AnswerDelta, BadInput, Done, KBNotFound, LocalRAG, LocalragError, Retrieved, load_settings, sample_dir,
)

REPO = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(tmp_path, minilm_zip, smollm2_gguf):
    """A script using only `from localrag import ...`: ingest a folder, search, stream an answer
    with citations. The offline starter answers (SmolLM2 and MiniLM from their packages)."""
    script = tmp_path / "example.py"
    script.write_text(_readme_example(), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    # keep generation short: this checks the API, not the tiny model's prose
    (home / "config.toml").write_text("[generation]\nmax_answer_tokens = 48\n", encoding="utf-8")
    env = {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "'added': 5" in out
    assert re.search(r"^1 choosing-a-model\.md", out, re.M), out  # the search's best hit
    assert re.search(r"reading \d+ tokens, ~\d+ s", out)
    # only the lines under the example's own "Sources:" header: the streamed answer itself may
    # start a line with "[1] " and a word that names no file (the likeliest cause of a CI failure)
    assert "\nSources:\n" in out, out
    sources = out.rsplit("\nSources:\n", 1)[1]
    cited = re.findall(r"^\[(\d+)\] (\S+)", sources, re.M)
    assert cited, out  # the answer's citations resolve to files
    assert all(Path(sample_dir(), src).is_file() for _, src in cited), out


def test_public_names_are_exported_and_lazy():
    assert {"LocalRAG", "Conversation", "LocalragError", "KBNotFound", "AskEvent", "Done"} <= set(localrag.__all__)
    probe = "import sys, localrag; print(sorted(m for m in ('torch','pymilvus','llama_cpp','localrag.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # `import localrag` loads nothing until a name is used


@pytest.fixture(scope="module")
def rag(tmp_path_factory, minilm_zip):
    root = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCALRAG_HOME", str(root / "home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        settings = load_settings()
    with LocalRAG(settings) as api:
        api.ingest([sample_dir()], kb="docs", embedder="all-minilm-l6-v2")
        yield api


def test_ingest_while_the_kb_is_open_for_search_in_the_same_process(rag, tmp_path):
    """Milvus Lite lets a process open a KB once; the API shares one handle, so a server can
    ingest into a KB it is searching without a lock error, and the new file is found at once."""
    assert rag.search("How does localrag pick a model?", kb="docs", k=1)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "zebras.md").write_text("# Zebras\n\nThe office zebra is called Ziggy and eats hay on Fridays.\n", encoding="utf-8")
    report = rag.ingest([extra], kb="docs")
    assert report.summary()["added"] == 1
    hits = rag.search("What is the office zebra called?", kb="docs", k=3)
    assert any(h.source == "zebras.md" for h in hits)
    docs = {d.source: d for d in rag.documents("docs")}
    assert "zebras.md" in docs and docs["zebras.md"].chunks >= 1 and docs["zebras.md"].filetype == "markdown"
    info = rag.kb_info("docs")
    assert info.files == len(docs) and info.embedder == "all-minilm-l6-v2" and info.to_dict()["name"] == "docs"

    removed = rag.remove_document("docs", "zebras.md")
    assert removed.source == "zebras.md"
    assert "zebras.md" not in {d.source for d in rag.documents("docs")}
    assert all(h.source != "zebras.md" for h in rag.search("What is the office zebra called?", kb="docs", k=5))
    with pytest.raises(BadInput, match="not a document"):
        rag.remove_document("docs", "zebras.md")


def test_errors_are_classes_with_remedies_not_commands(rag):
    with pytest.raises(KBNotFound) as err:
        rag.search("anything", kb="no-such-kb")
    assert err.value.http_status == 404 and "localrag " not in (err.value.hint or "")
    assert isinstance(err.value, LocalragError)
    with pytest.raises(BadInput):
        rag.search("anything", kb="docs", k=0)
    with pytest.raises(BadInput):
        rag.search("", kb="docs")
    with pytest.raises(BadInput):
        rag.kb_info("../etc")
    with pytest.raises(KBNotFound):
        rag.conversation("no-such-kb")
    assert "no-such-kb" not in rag.knowledge_bases()  # a failed open leaves nothing behind


def test_ask_streams_typed_events_and_prints_nothing(rag, smollm2_gguf, capsys):
    conv = rag.conversation("docs")
    events = list(conv.ask("How does localrag pick a model for my machine?"))
    assert isinstance(events[0], Retrieved) or events[0].kind == "loading"
    retrieved = next(e for e in events if isinstance(e, Retrieved))
    assert retrieved.prompt_tokens > 0 and retrieved.prefill_s > 0
    assert any(isinstance(e, AnswerDelta) for e in events)
    done = events[-1]
    assert isinstance(done, Done) and done.kind == "done"
    result = done.result
    assert result.model.starter and result.sources and result.answer
    # a follow-up keeps the conversation and reuses the model already loaded
    second = list(conv.ask("and without a GPU?"))[-1].result
    assert second.query.startswith("How does localrag pick a model") and len(conv.turns) == 2
    assert second.timings.cached_tokens > 0
    assert rag.pool.loaded is not None and rag.pool.loaded.id == result.model.id
    out = capsys.readouterr()
    assert out.out == ""


def test_hardware_is_given_not_detected(tmp_path, monkeypatch):
    from localrag.models import hardware

    def no_detect(*a, **k):
        raise AssertionError("hardware.detect must not run when hardware is given")

    monkeypatch.setattr(hardware, "detect", no_detect)
    monkeypatch.setenv("LOCALRAG_HOME", str(tmp_path))
    big = hardware.Hardware(
        cpu_cores_physical=32, cpu_cores_logical=64, ram_total=256 * 2**30, ram_available=250 * 2**30,
        disk_free=2**40, gpus=[hardware.GPU("nvidia", "H100", 80 * 2**30, 79 * 2**30)], gpu_offload_supported=True,
    )
    with LocalRAG(hardware=big) as api:
        plan = api.plan()
        assert api.hardware is big
    assert plan.choice is not None and plan.choice.fit == "gpu"
    assert plan.choice.model != "r1-distill-qwen-1.5b"  # 80 GB of VRAM runs far more than the 1.5B
