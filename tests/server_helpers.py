"""Starting a real `localrag serve` for tests: its own data dir, real KBs, keys made by the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.kb_helpers import REPO, free_port, wait_port

INGEST = """
import json, sys
from localrag.api import LocalRAG
with LocalRAG() as rag:
    for kb, path in json.loads(sys.argv[1]).items():
        rag.ingest([path], kb=kb, embedder="all-minilm-l6-v2")
"""


def env_for(home: Path, **extra) -> dict:
    return {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(REPO), "COLUMNS": "200", **extra}


def cli(home: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localrag", *args], cwd=REPO, env=env or env_for(home),
                          capture_output=True, text=True, timeout=timeout)


def make_key(home: Path, name: str, *args: str, env: dict | None = None) -> str:
    proc = cli(home, "keys", "create", name, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def ingest(home: Path, kbs: dict[str, Path], env: dict | None = None) -> None:
    subprocess.run([sys.executable, "-c", INGEST, json.dumps({k: str(v) for k, v in kbs.items()})], cwd=REPO,
                   env=env or env_for(home), check=True, timeout=600, capture_output=True)


class Server:
    """A `localrag serve` subprocess on a free loopback port."""

    def __init__(self, home: Path, *args: str, env: dict | None = None, log: Path | None = None):
        self.home = home
        self.args = args
        self.env = env or env_for(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or home.parent / f"server-{self.port}.log"
        self.proc = None

    def start(self, timeout: float = 180) -> "Server":
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localrag", "serve", "--port", str(self.port), *self.args], cwd=REPO, env=self.env,
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                wait_port(self.port, timeout=1)
                return self
            except TimeoutError:
                continue
        raise TimeoutError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def request(self, method: str, path: str, key: str | None = None, body=None, *, raw: bytes | None = None,
                headers: dict | None = None, timeout: float = 300) -> tuple[int, dict, bytes]:
        """(status, headers, body bytes); never raises for an HTTP error status."""
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, method: str, path: str, key: str | None = None, body=None, **kw) -> tuple[int, object]:
        status, _, data = self.request(method, path, key, body, **kw)
        return status, json.loads(data) if data else None

    def wait_job(self, key: str, job: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, data = self.json("GET", f"/api/jobs/{job}", key)
            assert status == 200, data
            if data["state"] in ("done", "failed", "interrupted"):
                return data
            time.sleep(0.3)
        raise TimeoutError(f"job {job} still {data['state']}")


def multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with raw (unsanitised) file names, as a hostile client sends."""
    boundary = "----localragtest7f3a"
    out = bytearray()
    for name, content in files:
        out += f"--{boundary}\r\n".encode()
        out += b'Content-Disposition: form-data; name="' + field.encode() + b'"; filename="'
        out += name.encode("utf-8") if isinstance(name, str) else name
        out += b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
