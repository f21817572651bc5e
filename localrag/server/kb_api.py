"""The knowledge-base API under /api/ (docs/SERVER-API.md): list, info, documents, search,
uploads and sync as background jobs, removing a document, and the original files behind signed
links. Every handler checks the key's role on the KB first; blocking work runs in the work pool.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from localrag.errors import BadInput, LocalragError
from localrag.server.auth import need, not_found, principal
from localrag.server.http import ApiError
from localrag.server.jobs import FINAL
from localrag.server.openai_api import in_pool

router = APIRouter(prefix="/api")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)


def _state(request: Request):
    return request.app.state.localrag


@router.get("/me")
async def me(who=Depends(principal)):
    return {"name": who.name, "admin": who.admin, "kbs": dict(who.kbs)}


def _summaries(state, who) -> list[dict]:
    rows = []
    for kb in state.rag.knowledge_bases():
        role = who.role(kb)
        if role is None:
            continue
        try:
            info = state.rag.kb_info(kb)
        except LocalragError:
            continue  # busy in another process, or removed meanwhile: not listed
        rows.append({"name": kb, "role": role, "files": info.files, "chunks": info.chunks,
                     "embedder": info.embedder, "updated": info.updated})
    return rows


@router.get("/kbs")
async def kbs(request: Request, who=Depends(principal)):
    return await in_pool(request, _summaries, _state(request), who)


@router.get("/kbs/{kb}")
async def kb_info(kb: str, request: Request, who=Depends(principal)):
    need(who, kb, "read")
    info = await in_pool(request, _state(request).rag.kb_info, kb)
    return {**info.to_dict(), "role": who.role(kb)}


def _pages(path: str, filetype: str) -> int | None:
    if filetype != "pdf":
        return None
    try:
        import pypdfium2

        pdf = pypdfium2.PdfDocument(path)
        try:
            return len(pdf)
        finally:
            pdf.close()
    except Exception:  # noqa: BLE001 - a page count is a nicety; the file may be gone
        return None


def _documents(state, kb: str, base: str, key_id: str) -> list[dict]:
    rows = []
    for doc in state.rag.documents(kb):
        rows.append({"source": doc.source, "filetype": doc.filetype, "chunks": doc.chunks, "size_bytes": doc.size,
                     "ingested_at": doc.ingested_at, "pages": _pages(doc.path, doc.filetype),
                     "url": state.signer.url(base, key_id, kb, doc.source)})
    return rows


@router.get("/kbs/{kb}/documents")
async def documents(kb: str, request: Request, who=Depends(principal)):
    need(who, kb, "read")
    return await in_pool(request, _documents, _state(request), kb, str(request.base_url), who.key_id)


def _remove(state, kb: str, source: str) -> dict:
    try:
        doc = state.rag.remove_document(kb, source)
    except BadInput:
        raise ApiError(404, f"'{source}' is not a document of the knowledge base '{kb}'", "document_not_found") from None
    # An uploaded original goes too, or the next sync would bring it back.
    uploads = state.jobs.docs_dir(kb).resolve()
    path = Path(doc.path).resolve()
    if path.is_relative_to(uploads) and path.is_file():
        path.unlink()
    return {"removed": doc.source}


@router.delete("/kbs/{kb}/documents/{source:path}")
async def remove_document(kb: str, source: str, request: Request, who=Depends(principal)):
    need(who, kb, "write")
    return await in_pool(request, _remove, _state(request), kb, source)


@router.post("/kbs/{kb}/search")
async def search(kb: str, body: SearchRequest, request: Request, who=Depends(principal)):
    need(who, kb, "read")
    hits = await in_pool(request, _state(request).rag.search, body.query, kb=kb, k=body.k)
    return [h.to_dict() for h in hits]


@router.post("/kbs/{kb}/uploads", status_code=202)
async def upload(kb: str, request: Request, who=Depends(principal)):
    from localrag.kb.files import DEFAULT_MAX_BYTES
    from localrag.kb.index import validate_name
    from localrag.server.uploads import receive

    need(who, kb, "write")
    try:
        validate_name(kb)
    except BadInput:
        raise not_found(kb) from None
    state = _state(request)
    try:
        job_id, staging = state.jobs.new_staging()
    except OSError as exc:
        raise _cannot_store(exc) from None
    try:
        files = await receive(request, staging, max_total=state.config.max_upload_bytes,
                              max_file=min(state.config.max_upload_bytes, DEFAULT_MAX_BYTES))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _cannot_store(exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a refused upload leaves nothing behind
        raise
    job = state.jobs.submit_upload(job_id, kb, files)
    return {"job": job.id, "files": files}


def _cannot_store(exc: OSError) -> ApiError:
    """A full or read-only disk under the data dir: the client is told, not handed a 500."""
    return ApiError(507, f"the server could not store the upload: {exc.strerror or exc}", "storage_error")


@router.post("/kbs/{kb}/sync", status_code=202)
async def sync(kb: str, request: Request, who=Depends(principal)):
    need(who, kb, "write")
    state = _state(request)
    await in_pool(request, state.rag.kb_info, kb)  # a missing KB is a 404 now, not a failed job later
    job = state.jobs.submit_sync(kb)
    return {"job": job.id}


def _job_for(request: Request, who, job_id: str):
    job = _state(request).jobs.get(job_id)
    if job is None or who.role(job.kb) is None:
        raise ApiError(404, f"no job '{job_id}'", "job_not_found")
    return job


@router.get("/jobs/{job_id}")
async def job(job_id: str, request: Request, who=Depends(principal)):
    return _job_for(request, who, job_id).public()


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, who=Depends(principal)):
    from sse_starlette.sse import EventSourceResponse

    job = _job_for(request, who, job_id)

    async def events():
        seen = -1
        while True:
            final = job.state in FINAL  # read first: its event is always sent
            if job.version != seen or final:
                seen = job.version
                yield {"data": json.dumps(job.public(), ensure_ascii=False)}
            if final:
                return
            await asyncio.sleep(0.2)

    return EventSourceResponse(events(), ping=15)


@router.get("/kbs/{kb}/files/{source:path}")
async def original(kb: str, source: str, request: Request, t: str = ""):
    """The original file; the ``t`` token stands in for the Bearer header (signed, expiring)."""
    state = _state(request)
    key_id = state.signer.check(t, kb, source) if t else None
    if key_id is not None:
        who = state.keys.alive(key_id)
        if who is None:
            raise ApiError(401, "the key this link was made for was revoked", "invalid_api_key")
    elif t:
        raise ApiError(401, "this link has expired or is not valid; reload the page for a fresh one", "invalid_link")
    else:
        who = await in_pool(request, principal, request)  # a first-seen key costs the KDF: not on the loop
    need(who, kb, "read")
    try:
        doc = await in_pool(request, state.rag.document, kb, source)
    except BadInput:
        raise ApiError(404, f"'{source}' is not a document of the knowledge base '{kb}'", "document_not_found") from None
    path = Path(doc.path)
    if not path.is_file():
        raise ApiError(410, f"the original of '{source}' is no longer on the server", "file_gone")
    if doc.filetype == "pdf":
        media = "application/pdf"
    elif doc.filetype in ("markdown", "text"):
        media = "text/plain; charset=utf-8"
    else:
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media == "text/html":
            media = "text/plain; charset=utf-8"  # served as text: a document's scripts do not run in our origin
    headers = {"X-Content-Type-Options": "nosniff"}
    if media != "application/pdf":
        # nothing a document carries runs in the server's origin; a PDF keeps the browser's viewer,
        # which a sandboxed page may not load
        headers["Content-Security-Policy"] = "sandbox"
    return FileResponse(path, media_type=media, content_disposition_type="inline", filename=path.name, headers=headers)


# --- keys (admin) -----------------------------------------------------------------------------------


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    kbs: dict[str, str] = Field(default_factory=dict)
    admin: bool = False


@router.get("/keys")
async def keys_list(request: Request, who=Depends(principal)):
    from localrag.server.auth import need_admin

    need_admin(who)
    return [r.public() for r in _state(request).keys.records()]


@router.post("/keys", status_code=201)
async def keys_create(body: KeyRequest, request: Request, who=Depends(principal)):
    """A new key, returned once (as ``localrag keys create`` prints it)."""
    from localrag.server.auth import need_admin
    from localrag.server.keys import parse_grants

    need_admin(who)
    grants = parse_grants([f"{kb}:{role}" for kb, role in body.kbs.items()])
    key, rec = await in_pool(request, _state(request).keys.create, body.name, kbs=grants, admin=body.admin)
    return {"key": key, **rec.public()}


@router.delete("/keys/{name}")
async def keys_revoke(name: str, request: Request, who=Depends(principal)):
    from localrag.server.auth import need_admin

    need_admin(who)
    _state(request).keys.revoke(name)
    return {"revoked": name}
