"""The FastAPI application: routes, error shapes, request metrics, the web page's files."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from localrag.server import http
from localrag.server.http import ApiError

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 8 * 2**20  # a chat or search body; uploads have their own limit


def create_app(state):
    from contextlib import asynccontextmanager

    from localrag.server import kb_api, openai_api

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = FastAPI(title="localrag", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.localrag = state
    http.install(app)
    app.include_router(openai_api.router)
    app.include_router(kb_api.router)
    app.add_middleware(Guard, state=state)

    @app.get("/health")
    async def health():
        pool = state.rag.pool
        loaded = pool.loaded
        return {
            "status": "ok",
            "version": _version(),
            "model": loaded.id if loaded else None,
            "model_loaded": loaded is not None,
            "threads": state.config.threads,
            "threads_why": state.config.threads_why,
            "queue": {"slots": state.queue.slots, "active": state.queue.active, "waiting": state.queue.waiting,
                      "max_waiting": state.queue.max_waiting},
            "jobs_pending": state.jobs.pending,
            "uptime_s": round(time.time() - state.metrics.started, 1),
        }

    @app.get("/metrics")
    async def metrics(request: Request):
        from localrag.server.auth import principal

        principal(request)  # any valid key; the numbers say how busy the server is, nothing more
        text = state.metrics.render(queue_waiting=state.queue.waiting, queue_active=state.queue.active,
                                    slots=state.queue.slots, threads=state.config.threads, jobs_running=state.jobs.pending,
                                    conversations_reused=state.conversations.hits)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def index():
        page = STATIC / "index.html"
        if not page.is_file():
            raise ApiError(404, "the web page is not installed; the API is under /v1 and /api", "no_page")
        return FileResponse(page, media_type="text/html")

    if STATIC.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class Guard:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware would hide a client's disconnect from
    the endpoint): refuse an oversized JSON body on its Content-Length, read the rest of a refused
    body before answering (http.DRAIN_BYTES), count every response."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        # A client that asked "Expect: 100-continue" sends nothing until the body is read: a refusal
        # answered before that needs no draining, and draining would ask for the whole body.
        waits = headers.get(b"expect", b"").lower() == b"100-continue"
        capped = not scope["path"].endswith("/uploads")  # JSON; uploads have their own limit
        if capped and length.isdigit() and int(length) > MAX_JSON_BYTES:
            return await self._too_large(scope, receive, send, drain=_drainable(length) and not waits)
        if capped and not length and not waits and _has_body(headers):
            # A chunked body declares no length: read it here (it is JSON, held whole by the
            # endpoint anyway) and refuse it as soon as it passes the limit.
            receive, over = await _buffered(receive, MAX_JSON_BYTES)
            if over:
                return await self._too_large(scope, receive, send, drain=True)

        body = {"asked": False, "done": False, "started": False}

        async def reading():
            body["asked"] = True
            message = await receive()
            body["done"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def drain_refused():
            if not body["done"] and _drainable(length) and not (waits and not body["asked"]):
                await http.drain(receive)  # see http.DRAIN_BYTES

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                body["started"] = True
                if message["status"] >= 400:
                    await drain_refused()
            await send(message)

        try:
            await self.app(scope, reading, counting_send)
        except Exception:
            if not body["started"]:  # the 500 is sent further out (Starlette's error middleware)
                await drain_refused()
            raise
        finally:
            route = scope.get("route")
            self.state.metrics.request(scope["method"], getattr(route, "path", "unmatched"), status["code"])


    async def _too_large(self, scope, receive, send, *, drain: bool) -> None:
        response = JSONResponse(http.body(413, f"the request body is over {MAX_JSON_BYTES // 2**20} MiB", "too_large"),
                                status_code=413)
        self.state.metrics.request(scope["method"], "unmatched", 413)
        if drain:
            await http.drain(receive)
        await response(scope, receive, send)


def _has_body(headers: dict) -> bool:
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower()


async def _buffered(receive, limit: int):
    """(a receive that replays the body read here, then goes on as ``receive``; whether the body
    passed ``limit``, in which case the rest is left unread)."""
    held, size = [], 0
    while True:
        message = await receive()
        held.append(message)
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False) or size > limit:
            break

    async def replay():
        return held.pop(0) if held else await receive()

    return replay, size > limit


def _drainable(length: bytes) -> bool:
    """A refused body is read to its end only when it is not declared larger than DRAIN_BYTES."""
    return not length.isdigit() or int(length) <= http.DRAIN_BYTES


def _version() -> str:
    from localrag import __version__

    return __version__
