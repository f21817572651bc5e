"""Where knowledge bases live: their names, the connection to Milvus, the lock on a local KB, and
listing and removing whole KBs.

With Milvus Lite (the default) a KB is a directory, ``<kb_dir>/<name>/``, holding its database
``milvus.db`` and the lock file. With ``--milvus-uri`` its collections live on the server, their
names prefixed ``localrag_<name>_`` (``server_prefix``). pymilvus loads only when a connection is made.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from localrag.errors import BadConfig, BadInput, KBBusy, KBNotFound

KB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
LOCK_FILE = "localrag.lock"


def validate_name(name: str) -> str:
    if not KB_NAME_RE.match(name or ""):
        raise BadInput(
            f"invalid knowledge base name {name!r}",
            hint="Use letters, digits, '-' and '_' (up to 63 characters), starting with a letter or digit.",
        )
    return name


def server_prefix(name: str) -> str:
    # Collection names allow only [A-Za-z0-9_]; this mapping is injective.
    return "localrag_" + name.replace("_", "_u").replace("-", "_d") + "_"


def kb_path(settings, name: str) -> Path:
    return settings.kb_dir / name


# --- locking ------------------------------------------------------------------------------


class KBLock:
    """Who holds a local KB. Milvus Lite allows one process per database; this lock turns the
    collision into a clear message with the holder's pid instead of a connection failure."""

    def __init__(self, directory: Path, name: str):
        import fcntl

        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / LOCK_FILE
        self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(self._fd)
                self._fd = None
            raise KBBusy(
                f"knowledge base '{name}' is in use by another localrag process (pid {pid})",
                hint="Wait for it to finish (an ingest, chat or search), or stop it, then retry.",
                pid=int(pid) if pid.isdigit() else None,
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def connect(uri: str, token: str | None):
    """A ``MilvusClient`` on ``uri`` (a Milvus Lite database file or a server); ``BadConfig`` when it fails."""
    # (A front door quiets pymilvus, Milvus Lite and gRPC for its process: localrag.process.)
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri=uri, token=token or "")
    except Exception as exc:
        raise BadConfig(
            f"cannot connect to Milvus at {uri}: {_short(exc)}",
            hint="Check the Milvus URI setting (milvus_uri, LOCALRAG_MILVUS_URI) and that the server is running.",
        ) from exc


def _short(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return msg.splitlines()[0][:300] if msg else type(exc).__name__


# --- whole KBs ----------------------------------------------------------------------------


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def list_kbs(settings) -> list[str]:
    if settings.milvus_uri:
        client = connect(settings.milvus_uri, settings.milvus_token)
        try:
            names = set()
            for col in client.list_collections():
                if col.startswith("localrag_") and col.endswith("_files"):
                    enc = col[len("localrag_") : -len("_files")]
                    names.add(re.sub(r"_(u|d)", lambda m: "_" if m.group(1) == "u" else "-", enc))
            return sorted(names)
        finally:
            client.close()
    if not settings.kb_dir.is_dir():
        return []
    return sorted(p.name for p in settings.kb_dir.iterdir() if (p / "milvus.db").exists() and KB_NAME_RE.match(p.name))


def remove_kb(settings, name: str) -> None:
    validate_name(name)
    if settings.milvus_uri:
        client = connect(settings.milvus_uri, settings.milvus_token)
        try:
            prefix = server_prefix(name)
            found = False
            for col in (prefix + "chunks", prefix + "files"):
                if client.has_collection(col):
                    client.drop_collection(col)
                    found = True
            if not found:
                raise KBNotFound(f"knowledge base '{name}' does not exist", hint="See which knowledge bases exist.", remedy="list_kbs")
        finally:
            client.close()
        return
    directory = kb_path(settings, name)
    if not directory.is_dir():
        raise KBNotFound(f"knowledge base '{name}' does not exist", hint="See which knowledge bases exist.", remedy="list_kbs")
    lock = KBLock(directory, name)  # refuses while another process uses it
    try:
        trash = directory.with_name(f".{name}.deleting-{os.getpid()}")
        # Rename first so a crash mid-delete never leaves a half-deleted KB that looks valid.
        directory.rename(trash)
    finally:
        lock.release()
    shutil.rmtree(trash, ignore_errors=True)
