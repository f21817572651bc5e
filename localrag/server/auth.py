"""Who is asking, and may they: the Bearer key, and the KB roles it carries.

A knowledge base a key has no role on does not exist for that key: 404, the same answer as for a
name that exists nowhere, so a key cannot probe for others' knowledge bases. A KB the key sees
but may not change is a 403.
"""

from __future__ import annotations

from fastapi import Request

from localrag.server.http import ApiError
from localrag.server.keys import Principal, Unauthorized


def principal(request: Request) -> Principal:
    """The request's principal (FastAPI dependency)."""
    state = request.app.state.localrag
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' (make one with `localrag keys create`)",
                       "missing_api_key", {"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'", "invalid_api_key",
                       {"WWW-Authenticate": "Bearer"})
    try:
        who = state.keys.verify(key.strip())
    except Unauthorized as exc:
        raise ApiError(401, str(exc), "invalid_api_key", {"WWW-Authenticate": "Bearer"}) from None
    request.state.principal = who
    return who


def not_found(kb: str) -> ApiError:
    return ApiError(404, f"knowledge base '{kb}' does not exist", "kb_not_found")


def need(who: Principal, kb: str, role: str) -> None:
    """Raise 404 when ``who`` cannot see ``kb``, 403 when it sees it without ``role``."""
    if who.role(kb) is None:
        raise not_found(kb)
    if not who.may(kb, role):
        raise ApiError(403, f"this key may only {who.role(kb)} the knowledge base '{kb}', not {role}", "permission_denied")


def need_admin(who: Principal) -> None:
    if not who.admin:
        raise ApiError(403, "this needs an admin key", "permission_denied")
