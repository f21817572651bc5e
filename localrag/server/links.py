"""Signed, expiring links to a knowledge base's original files.

A browser opens a cited PDF in a new tab without the Bearer header, so every ``url`` the server
returns carries ``?t=<token>``: an HMAC over (key id, kb, source, expiry) with a secret kept in
the data dir. The token is only good for that one file until it expires, and only while the key
that asked for it is still valid with read access to that knowledge base (a revoke ends its
links too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from pathlib import Path
from urllib.parse import quote

TTL_S = 3600


def load_secret(home: Path) -> bytes:
    path = Path(home) / "server" / "link-secret"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))
    return path.read_bytes()


class Signer:
    def __init__(self, secret: bytes, ttl_s: int = TTL_S):
        self.secret = secret
        self.ttl_s = ttl_s

    def _mac(self, key_id: str, kb: str, source: str, expires: int) -> str:
        msg = "\0".join((key_id, kb, source, str(expires))).encode("utf-8", "surrogatepass")
        return base64.urlsafe_b64encode(hmac.new(self.secret, msg, hashlib.sha256).digest()[:18]).decode()

    def token(self, key_id: str, kb: str, source: str) -> str:
        expires = int(time.time()) + self.ttl_s
        return f"{key_id}.{expires}.{self._mac(key_id, kb, source, expires)}"

    def check(self, token: str, kb: str, source: str) -> str | None:
        """The key id the token was made for, when it is genuine and unexpired; else None."""
        try:
            key_id, expires_s, mac = token.split(".", 2)
            expires = int(expires_s)
        except (ValueError, AttributeError):
            return None
        if expires < time.time():
            return None
        if not hmac.compare_digest(mac, self._mac(key_id, kb, source, expires)):
            return None
        return key_id

    def url(self, base: str, key_id: str, kb: str, source: str) -> str:
        return f"{base.rstrip('/')}/api/kbs/{quote(kb)}/files/{quote(source)}?t={self.token(key_id, kb, source)}"
