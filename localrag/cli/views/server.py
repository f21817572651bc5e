"""``localrag serve`` and ``localrag keys``: start the server, manage its API keys."""

from __future__ import annotations

import json
import time

from localrag.cli.console import stderr, stdout


def serve(settings, *, host: str, port: int, kbs: list[str], slots: int, max_waiting: int, max_upload_mb: int,
          sources_in_content: bool) -> int:
    from localrag.server.main import serve as run
    from localrag.server.state import MIB, ServeConfig

    config = ServeConfig(host=host, port=port, kbs=list(kbs), slots=slots, max_waiting=max_waiting,
                         max_upload_bytes=max_upload_mb * MIB, sources_in_content=sources_in_content)
    err = stderr()
    run(settings, config, lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
    return 0


def keys_create(settings, name: str, *, grants: list[str], admin: bool) -> int:
    from localrag.server.keys import KeyStore, parse_grants

    key, rec = KeyStore(settings.home).create(name, kbs=parse_grants(grants), admin=admin)
    out = stdout()
    roles = "admin (every knowledge base, keys)" if rec.admin else ", ".join(f"{kb}:{r}" for kb, r in rec.kbs.items())
    stderr().print(f"key '{name}' created: {roles}. It is shown once; store it now.", highlight=False, markup=False,
                   soft_wrap=True)
    out.print(key, highlight=False, markup=False, soft_wrap=True)
    return 0


def keys_list(settings, *, json_out: bool = False) -> int:
    from localrag.server.keys import KeyStore

    records = KeyStore(settings.home).records()
    if json_out:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    out = stdout()
    if not records:
        out.print("no API keys. Make one: localrag keys create NAME --kb KB:read (or --admin)", markup=False)
        return 0
    for r in records:
        roles = "admin" if r.admin else ", ".join(f"{kb}:{role}" for kb, role in sorted(r.kbs.items()))
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        state = f"revoked {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.revoked))}" if r.revoked else "active"
        out.print(f"{r.name:<20} lrag_{r.id}_…  {roles:<30} created {when}  {state}", highlight=False, markup=False)
    return 0


def keys_revoke(settings, name: str) -> int:
    from localrag.server.keys import KeyStore

    KeyStore(settings.home).revoke(name)
    stdout().print(f"key '{name}' revoked (a running server refuses it from its next request)", markup=False)
    return 0
