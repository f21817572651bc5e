"""The HTTP side of ``remote.py``: a few JSON requests and one server-sent-event stream to an
OpenAI-compatible inference server, over the standard library's http.client.

Connection and transport failures become ``LocalragError``s with the server's URL in them; a
non-2xx answer becomes ``HTTPStatus``, which ``RemoteEngine`` turns into the error that fits.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import urllib.parse

from localrag.errors import BadConfig, LocalragError

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # a CPU server may read a long prompt for minutes before the first token


class Client:
    """A few JSON requests and one SSE stream over http.client; errors become LocalragErrors."""

    def __init__(self, url: str, api_key: str | None = None):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadConfig(
                f"bad inference server URL {url!r}: expected http://HOST:PORT",
                hint="set llm_url (LOCALRAG_LLM_URL, --llm-url) to the server's address, e.g. http://127.0.0.1:8080",
            )
        self.url = url.strip().rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port
        except ValueError:
            raise BadConfig(f"bad port in inference server URL {url!r}") from None
        # Accept the base URL with or without the /v1 that OpenAI clients are usually given.
        self.prefix = re.sub(r"/v1$", "", parts.path.rstrip("/"))
        self.api_key = api_key

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise BadConfig(
                f"cannot reach the inference server at {self.url}: {error_reason(exc)}",
                hint="check llm_url (LOCALRAG_LLM_URL, --llm-url) and that the server is running",
            ) from None
        conn.sock.settimeout(READ_TIMEOUT_S)
        return conn

    def open(self, method: str, path: str, body: dict | None = None, *, stream: bool = False):
        """(connection, response) with a 2xx status; the caller closes the connection."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connect()
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LocalragError(f"the inference server at {self.url} dropped the request: {error_reason(exc)}",
                                hint="see the server's log") from None
        if resp.status >= 300:
            try:
                text = resp.read(65536)
            except (OSError, http.client.HTTPException):
                text = b""
            conn.close()
            raise HTTPStatus(resp.status, server_message(text))
        return conn, resp

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        conn, resp = self.open(method, path, body)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LocalragError(f"the inference server at {self.url} dropped the reply: {error_reason(exc)}") from None
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise BadConfig(f"{self.url}{path} did not answer JSON: is it an OpenAI-compatible server?") from None


class HTTPStatus(Exception):
    """A non-2xx answer; ``RemoteEngine`` turns it into the LocalragError that fits."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def error_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def server_message(raw: bytes) -> str:
    """The server's own words from an error body (OpenAI, FastAPI and llama-server shapes)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "no message"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if isinstance(err, list):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if err:
            return str(err)[:300]
    return text[:300]
