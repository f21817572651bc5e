"""The running server's address, in the data dir, so other localrag processes can point to it.

Milvus Lite lets one process open a knowledge base; while ``localrag serve`` holds them, a CLI
``ingest``/``search``/``ask`` on one of them gets a lock error. With this file the CLI can say
which server holds it and where to reach it instead of only a pid. Kept tiny and free of heavy
imports: the CLI reads it on its error path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def path(home: Path) -> Path:
    return Path(home) / "server" / "server.json"


def write(home: Path, url: str, kbs: list[str]) -> None:
    target = path(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".server.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "kbs": kbs}), encoding="utf-8")
    tmp.replace(target)


def remove(home: Path) -> None:
    """Remove the file if it is this process's (another server may have started since)."""
    info = read(home)
    if info is not None and info.get("pid") == os.getpid():
        path(home).unlink(missing_ok=True)


def read(home: Path) -> dict | None:
    """The running server's {"pid", "url", "kbs"}, or None (no file, or its process is gone)."""
    try:
        info = json.loads(path(home).read_text(encoding="utf-8"))
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return info
