"""API keys: who may read or change which knowledge base.

A key looks like ``lrag_<id>_<secret>``. The file ``server/keys.json`` in the data dir holds, per
key, its name, id, roles and an scrypt hash of the secret (never the key itself): a copied key
file does not give access, and guessing a secret costs the slow KDF each try. A server checks a
key once with scrypt and then remembers the verified key in memory (by a fast digest), so a
request does not pay the KDF; the store re-reads the file when it changes (revoke from the CLI
while a server runs: the next request sees it).

Roles per knowledge base: ``read`` (ask, search), ``write`` (+ upload, remove, sync). An admin
key may do everything on every knowledge base and manage keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from localrag.errors import BadInput

ROLES = ("read", "write", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
PREFIX = "lrag"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
# scrypt at n=2**14, r=8: ~16 MiB and ~50 ms per check on a laptop core; paid once per key per
# server process thanks to the verified-key cache.
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class Principal:
    """Who a request is: a key's name and its roles."""

    name: str
    key_id: str
    admin: bool
    kbs: dict[str, str] = field(default_factory=dict)

    def role(self, kb: str) -> str | None:
        return "admin" if self.admin else self.kbs.get(kb)

    def may(self, kb: str, need: str) -> bool:
        role = self.role(kb)
        return role is not None and RANK[role] >= RANK[need]


@dataclass
class KeyRecord:
    id: str
    name: str
    salt: str
    hash: str
    kbs: dict[str, str]
    admin: bool
    created: float
    revoked: float | None = None

    def principal(self) -> Principal:
        return Principal(self.name, self.id, self.admin, dict(self.kbs))

    def public(self) -> dict:
        return {"name": self.name, "id": self.id, "admin": self.admin, "kbs": dict(self.kbs),
                "created": self.created, "revoked": self.revoked}


def parse_grants(grants: list[str]) -> dict[str, str]:
    """``["handbook:read", "eng:write"]`` -> {"handbook": "read", "eng": "write"}."""
    from localrag.kb.index import validate_name

    out: dict[str, str] = {}
    for grant in grants:
        kb, _, role = grant.partition(":")
        role = role or "read"
        if role not in ("read", "write"):
            raise BadInput(f"unknown role {role!r} in {grant!r}", hint="Use KB:read or KB:write (or --admin for every KB).")
        validate_name(kb)
        out[kb] = role
    return out


def _digest(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, maxmem=64 * 2**20, **SCRYPT)


class KeyStore:
    """The key file of one data dir. Thread-safe; re-reads the file when it changes on disk."""

    def __init__(self, home: Path):
        self.path = Path(home) / "server" / "keys.json"
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._records: dict[str, KeyRecord] = {}
        self._verified: dict[bytes, str] = {}  # sha256(full key) -> key id; cleared on reload

    # -- file ---------------------------------------------------------------------------------

    def _file_stamp(self):
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> dict[str, KeyRecord]:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            records = {}
            if stamp is not None:
                data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
                for row in data.get("keys", []):
                    rec = KeyRecord(**row)
                    records[rec.id] = rec
            self._records, self._stamp = records, stamp
            self._verified.clear()  # a revoke or a changed role takes effect now
        return self._records

    def _save(self, records: dict[str, KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".keys.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"keys": [r.__dict__ for r in records.values()]}, fh, indent=1)
        tmp.replace(self.path)
        self._stamp = None  # reload (and drop the verified cache) on next use

    # -- managing -----------------------------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        with self._lock:
            return sorted(self._load().values(), key=lambda r: r.created)

    def active(self) -> list[KeyRecord]:
        return [r for r in self.records() if r.revoked is None]

    def create(self, name: str, *, kbs: dict[str, str] | None = None, admin: bool = False) -> tuple[str, KeyRecord]:
        """A new key: (the key itself, shown once, and its record)."""
        if not NAME_RE.match(name or ""):
            raise BadInput(f"invalid key name {name!r}", hint="Use letters, digits and . _ @ - (up to 63 characters).")
        if not admin and not kbs:
            raise BadInput("a key needs at least one knowledge base or --admin", hint="e.g. --kb handbook:read")
        with self._lock:
            records = dict(self._load())
            if any(r.name == name and r.revoked is None for r in records.values()):
                raise BadInput(f"a key named {name!r} exists", hint="Revoke it first, or pick another name.")
            key_id = secrets.token_hex(4)
            while key_id in records:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(24)
            salt = os.urandom(16)
            rec = KeyRecord(key_id, name, salt.hex(), _digest(secret, salt).hex(), dict(kbs or {}), bool(admin), time.time())
            records[key_id] = rec
            self._save(records)
        return f"{PREFIX}_{key_id}_{secret}", rec

    def revoke(self, name: str) -> KeyRecord:
        with self._lock:
            records = dict(self._load())
            live = [r for r in records.values() if r.name == name and r.revoked is None]
            if not live:
                raise BadInput(f"no active key named {name!r}", hint="`localrag keys list` shows the keys.")
            for rec in live:
                rec.revoked = time.time()
            self._save(records)
            return live[0]

    # -- checking -----------------------------------------------------------------------------

    def verify(self, key: str) -> Principal:
        """The principal of a valid key; ``Unauthorized`` (with why) otherwise."""
        parts = (key or "").split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
            raise Unauthorized("malformed API key (expected lrag_<id>_<secret>)")
        key_id, secret = parts[1], parts[2]
        fast = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        with self._lock:
            records = self._load()
            rec = records.get(key_id)
            if rec is not None and self._verified.get(fast) == key_id:
                if rec.revoked is not None:
                    raise Unauthorized("this API key was revoked")
                return rec.principal()
        if rec is None:
            raise Unauthorized("unknown API key")
        ok = hmac.compare_digest(_digest(secret, bytes.fromhex(rec.salt)), bytes.fromhex(rec.hash))
        if not ok:
            raise Unauthorized("wrong API key")
        if rec.revoked is not None:
            raise Unauthorized("this API key was revoked")
        with self._lock:
            if self._records.get(key_id) is rec:  # not reloaded meanwhile
                self._verified[fast] = key_id
        return rec.principal()

    def alive(self, key_id: str) -> Principal | None:
        """The principal of a key id that is still valid (for signed links), else None."""
        with self._lock:
            rec = self._load().get(key_id)
        return rec.principal() if rec is not None and rec.revoked is None else None


class Unauthorized(Exception):
    """A missing, malformed, wrong or revoked key (HTTP 401)."""
