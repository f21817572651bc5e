"""``localrag serve``: one process owns the loaded model and the knowledge bases, and every
client (the web page, OpenAI clients, scripts) shares them through HTTP.

Start-up decides what a long-lived process must not leave to a 0.2 s sample at model load: the
llama.cpp thread count (settings ``generation.threads``, else a 1 s CPU sample now), and says
what it chose. It refuses to listen beyond loopback while no API key exists. It writes its pid
and URL to ``server/server.json`` in the data dir so a CLI command that finds a knowledge base
locked can say which server holds it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
from typing import Callable

from localrag.errors import BadConfig
from localrag.server.state import ServeConfig, ServerState

log = logging.getLogger("localrag.server")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def choose_threads(settings) -> tuple[int, str]:
    """llama.cpp threads for this server's lifetime, and why."""
    from localrag.runtime.engine import default_threads, physical_cores

    if settings.generation.threads:
        return settings.generation.threads, "from settings generation.threads"
    cores = physical_cores()
    n = default_threads(sample_s=1.0)
    busy = cores - n
    why = f"{cores} physical cores" + (f", {busy} kept busy by other programs over a 1 s sample at start" if busy else ", idle at start")
    return n, why


def prepare(settings, config: ServeConfig, say: Callable[[str], None]):
    """Checks, threads, the LocalRAG and the server state (nothing listens yet)."""
    from localrag.api import LocalRAG
    from localrag.server.keys import KeyStore

    keys = KeyStore(settings.home)
    if not is_loopback(config.host) and not keys.active():
        raise BadConfig(
            f"refusing to listen on {config.host}, which is not a loopback address, while no API key exists",
            hint="Make a key first (it is printed once and stored hashed), then start the server again.",
            remedy="create_key",
        )
    if settings.llm_url:
        say(f"generation on {settings.llm_url} (an OpenAI-compatible server); no model is loaded here")
    else:
        threads, why = choose_threads(settings)
        settings = dataclasses.replace(settings, generation=dataclasses.replace(settings.generation, threads=threads))
        config = dataclasses.replace(config, threads=threads, threads_why=why)
        say(f"llama.cpp threads: {threads} ({why})")
    rag = LocalRAG(settings)
    try:
        for kb in config.kbs:
            info = rag.kb_info(kb)  # opens (and locks) it now: a busy or missing KB fails here
            say(f"knowledge base '{kb}': {info.files} files, {info.chunks} chunks")
        state = ServerState(rag, config)
        for job in state.jobs.start():
            say(f"ingest job {job.id} ({job.kb}) was left unfinished by a stopped server: "
                + ("reported as interrupted" if job.state == "interrupted" else "running it again"))
    except BaseException:
        rag.close()
        raise
    if not keys.active():
        say("no API keys yet: every request will be refused until you make one: localrag keys create NAME --admin")
    return state


def serve(settings, config: ServeConfig, say: Callable[[str], None]) -> None:
    import uvicorn

    from localrag import process
    from localrag.server import runfile
    from localrag.server.app import create_app

    process.setup()
    state = prepare(settings, config, say)
    host = config.host
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{config.port}"
    server = uvicorn.Server(uvicorn.Config(
        create_app(state), host=host, port=config.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=5, lifespan="on",
    ))
    runfile.write(settings.home, url, config.kbs)
    say(f"serving on {url}  (OpenAI base URL {url}/v1; Ctrl-C stops)")
    try:
        server.run()
    finally:
        runfile.remove(settings.home)
        state.close()
        state.rag.close()
