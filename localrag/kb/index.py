"""A knowledge base in Milvus: chunk vectors + BM25 full text, and the file manifest beside them.

Layout with Milvus Lite (the default): one database per KB, ``<kb_dir>/<name>/milvus.db``, holding
two collections, ``chunks`` and ``files``. With ``--milvus-uri`` the same two collections live on
the server, prefixed ``localrag_<name>_``, so a KB is identical whichever backend holds it.

``files`` is the manifest: one row per ingested file (content hash, chunk count, size, mtime,
status) plus one row (empty path) holding the KB's own record (embedder, dimensions). Keeping it
in Milvus rather than in a side file means the server path needs nothing local, and its rows are
written through the same write-ahead log as the chunks, in the order ingest writes them.

Chunk ids are derived from (path, content hash, ordinal), so the ids of any manifest version of a
file can be recomputed: deleting a file's chunks never needs a filter expression over paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from localrag.errors import BadConfig, BadInput, KBBusy, KBNotFound
from localrag.lang import is_cjk

KB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_HASH_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
# 2: chunks carry their sentences' vectors (``sentences``); a schema-1 KB still works, and
# retrieval embeds those sentences at query time instead.
SCHEMA_VERSION = 2
_META_KEY = ""  # the manifest row that holds the KB record; no file has an empty path
_LOCK_FILE = "localrag.lock"

# Milvus' VARCHAR limits are in bytes; a chunk is bounded in tokens, so this is generous.
_TEXT_MAX = 65535
_PATH_MAX = 4096

# English function words carry no evidence for BM25 and jieba keeps punctuation as tokens;
# both only dilute scores. (Neither analyzer stems, so "index"/"indexes" stay distinct terms.)
STOP_WORDS = sorted(
    set(
        """a an and are as at be but by for from has have how i if in into is it its of on or
        that the their then there these this to was what when where which who why will with
        you your do does can 的 了 和 是 在 吗 呢 吧 啊 我 你 怎么 什么 如何 哪些 一个 可以 以及 或 与 及 对 中
        """.split()
    )
    | set(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+/\\|，。；：！？（）【】《》、“”‘’…—·")
)
ANALYZER = {"tokenizer": "jieba", "filter": [{"type": "stop", "stop_words": STOP_WORDS}]}


@dataclass
class FileRecord:
    """One manifest row. ``status`` is "pending" while its chunks are being replaced."""

    path: str  # absolute, resolved: the identity of a file
    source: str  # relative to the root it was ingested from: what users see
    root: str
    hash: str
    chunks: int
    size: int
    mtime_ns: int
    filetype: str = ""
    status: str = "ok"
    old_hash: str = ""  # while pending: the version being replaced
    old_chunks: int = 0
    ingested_at: float = field(default_factory=time.time)


@dataclass
class KBRecord:
    name: str
    embedder: str
    dim: int
    created: float
    schema: int = SCHEMA_VERSION
    chunk_settings: dict = field(default_factory=dict)


@dataclass
class ChunkRow:
    """A chunk ready to store: what ``ingest`` hands the index."""

    id: str
    file_id: int
    path: str
    source: str
    filetype: str
    page: int  # -1: no page
    heading: str
    ordinal: int
    char_start: int
    char_end: int
    file_hash: str
    text: str
    vector: Sequence[float]
    search_text: str = ""
    sentences: str = ""  # pack_vectors() of the chunk's sentence vectors; "" when none were made


def chunk_id(path: str, file_hash: str, ordinal: int) -> str:
    return hashlib.blake2b(f"{path}\0{file_hash}\0{ordinal}".encode(), digest_size=16).hexdigest()


def file_id(path: str) -> int:
    """A stable 63-bit id per path: filters use ``file_id in [...]``, which needs no string escaping."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big") >> 1


def pack_vectors(vectors) -> str:
    """Unit vectors as float16, base64: a 384-dim vector in 1,024 characters of a VARCHAR field.
    float16 keeps cosines to ~1e-3, far below the gaps that order candidates."""
    import base64

    import numpy as np

    arr = np.asarray(vectors, dtype=np.float16)
    return base64.b64encode(arr.tobytes()).decode("ascii") if arr.size else ""


def unpack_vectors(text: str, dim: int):
    """The (n, dim) float32 matrix ``pack_vectors`` stored; None when there is none or it is damaged."""
    import base64
    import binascii

    import numpy as np

    if not text:
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or len(raw) % (2 * dim):
        return None
    return np.frombuffer(raw, dtype=np.float16).reshape(-1, dim).astype(np.float32)


def validate_name(name: str) -> str:
    if not KB_NAME_RE.match(name or ""):
        raise BadInput(
            f"invalid knowledge base name {name!r}",
            hint="Use letters, digits, '-' and '_' (up to 63 characters), starting with a letter or digit.",
        )
    return name


def _server_prefix(name: str) -> str:
    # Collection names allow only [A-Za-z0-9_]; this mapping is injective.
    return "localrag_" + name.replace("_", "_u").replace("-", "_d") + "_"


def kb_path(settings, name: str) -> Path:
    return settings.kb_dir / name


# --- locking ------------------------------------------------------------------------------


class _KBLock:
    """Who holds a local KB. Milvus Lite allows one process per database; this lock turns the
    collision into a clear message with the holder's pid instead of a connection failure."""

    def __init__(self, directory: Path, name: str):
        import fcntl

        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / _LOCK_FILE
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


def _client(uri: str, token: str | None):
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


# --- the KB -------------------------------------------------------------------------------


class Index:
    """An open knowledge base. Keep it while working; ``close()`` releases the database."""

    def __init__(self, settings, name: str, client, prefix: str, lock: _KBLock | None, lite_uri: str | None):
        self.settings = settings
        self.name = name
        self._client = client
        self.chunks_col = prefix + "chunks"
        self.files_col = prefix + "files"
        self._lock = lock
        self._lite_uri = lite_uri
        self.record: KBRecord | None = None
        self.has_sentences = False  # the chunks collection stores sentence vectors (schema 2)
        self.dense_metric = "COSINE"

    # opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, settings, name: str, *, create: bool = False) -> "Index":
        """Open KB ``name``; with ``create`` make its storage if missing (the record is written
        by ``initialise``). Without ``create`` a missing KB is ``KBNotFound``; a KB another process holds is ``KBBusy``."""
        validate_name(name)
        if settings.milvus_uri:
            client = _client(settings.milvus_uri, settings.milvus_token)
            idx = cls(settings, name, client, _server_prefix(name), None, None)
        else:
            directory = kb_path(settings, name)
            if not create and not (directory / "milvus.db").exists():
                raise KBNotFound(
                    f"knowledge base '{name}' does not exist",
                    hint="Create it by ingesting documents into it, or pick an existing one.",
                    remedy="ingest", remedy_args={"kb": name},
                )
            lock = _KBLock(directory, name)
            try:
                uri = str(directory / "milvus.db")
                client = _client(uri, None)
            except BaseException:
                lock.release()
                raise
            idx = cls(settings, name, client, "", lock, uri)
        try:
            idx._load_record(required=not create)
        except BaseException:
            idx.close()
            raise
        return idx

    def _load_record(self, required: bool) -> None:
        c = self._client
        if c.has_collection(self.files_col):
            c.load_collection(self.files_col)
            rows = c.get(self.files_col, ids=[_META_KEY], output_fields=["info"])
            if rows:
                self.record = KBRecord(**json.loads(rows[0]["info"]))
        if self.record is None and required:
            raise KBNotFound(
                f"knowledge base '{self.name}' does not exist",
                hint="Create it by ingesting documents into it.",
                remedy="ingest", remedy_args={"kb": self.name},
            )
        if self.record is not None and c.has_collection(self.chunks_col):
            c.load_collection(self.chunks_col)
            self._check_fields()

    def require_embedder(self, wanted: str | None) -> None:
        """The one check that vectors of another embedder never meet this KB's (ingest and query
        alike). ``wanted`` is a canonical embedder id, or None for "the KB's own"."""
        if wanted and self.record is not None and wanted != self.record.embedder:
            raise BadInput(
                f"knowledge base '{self.name}' was built with embedder '{self.record.embedder}', not '{wanted}'",
                hint="Vectors from different embedders cannot be mixed: use the knowledge base's own embedder, "
                "or ingest into a new knowledge base with the one you want.",
            )

    def _check_fields(self) -> None:
        fields = self._client.describe_collection(self.chunks_col).get("fields", [])
        self.has_sentences = any(f.get("name") == "sentences" for f in fields)
        try:
            metric = self._client.describe_index(self.chunks_col, "dense").get("metric_type")
        except Exception:
            metric = None
        self.dense_metric = metric if metric in ("IP", "COSINE") else "COSINE"  # schema 1 used COSINE

    def initialise(self, embedder_id: str, dim: int, chunk_settings: dict | None = None) -> KBRecord:
        """Create the collections of a new KB and record its embedder."""
        from pymilvus import DataType, Function, FunctionType

        c = self._client
        if not c.has_collection(self.chunks_col):
            s = c.create_schema(auto_id=False, enable_dynamic_field=False)
            s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            s.add_field("file_id", DataType.INT64)
            s.add_field("path", DataType.VARCHAR, max_length=_PATH_MAX)
            s.add_field("source", DataType.VARCHAR, max_length=_PATH_MAX)
            s.add_field("filetype", DataType.VARCHAR, max_length=32)
            s.add_field("page", DataType.INT64)
            s.add_field("heading", DataType.VARCHAR, max_length=_PATH_MAX)
            s.add_field("ordinal", DataType.INT64)
            s.add_field("char_start", DataType.INT64)
            s.add_field("char_end", DataType.INT64)
            s.add_field("file_hash", DataType.VARCHAR, max_length=64)
            s.add_field("text", DataType.VARCHAR, max_length=_TEXT_MAX)
            # What BM25 sees: the heading path and the text (a question often names the section).
            s.add_field("search_text", DataType.VARCHAR, max_length=_TEXT_MAX, enable_analyzer=True, analyzer_params=ANALYZER)
            s.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
            # each sentence's own vector, for the sentence-level re-score of candidates: made at
            # ingest, so a query embeds only itself
            s.add_field("sentences", DataType.VARCHAR, max_length=_TEXT_MAX)
            s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            s.add_function(
                Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["search_text"], output_field_names=["sparse"])
            )
            ip = c.prepare_index_params()
            # FLAT: exact, and a very selective filter still returns its matches (graph indexes
            # can come back empty); at a laptop's chunk counts brute force is milliseconds.
            # Inner product: the vectors are unit length, so it is the cosine, and Milvus Lite's
            # brute force then skips re-normalising every stored vector on every query.
            ip.add_index("dense", index_type="FLAT", metric_type="IP")
            ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            c.create_collection(self.chunks_col, schema=s, index_params=ip)
        if not c.has_collection(self.files_col):
            s = c.create_schema(auto_id=False, enable_dynamic_field=False)
            s.add_field("path", DataType.VARCHAR, is_primary=True, max_length=_PATH_MAX)
            s.add_field("info", DataType.VARCHAR, max_length=_TEXT_MAX)
            # Milvus requires a vector field in every collection; this one is never searched.
            s.add_field("v", DataType.FLOAT_VECTOR, dim=2)
            ip = c.prepare_index_params()
            ip.add_index("v", index_type="FLAT", metric_type="L2")
            c.create_collection(self.files_col, schema=s, index_params=ip)
        c.load_collection(self.chunks_col)
        c.load_collection(self.files_col)
        self._check_fields()
        self.record = KBRecord(self.name, embedder_id, int(dim), time.time(), chunk_settings=chunk_settings or {})
        c.upsert(self.files_col, [{"path": _META_KEY, "info": json.dumps(asdict(self.record)), "v": [0.0, 0.0]}])
        return self.record

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass
        if self._lite_uri:
            # pymilvus starts an in-process Milvus Lite server per database and never stops it;
            # stopping it here releases the data directory's own lock for the next opener.
            try:
                from milvus_lite import server_manager_instance

                server_manager_instance.release_server(self._lite_uri)
            except Exception:
                pass
        if self._lock:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # manifest --------------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        rows = self._query_all(self.files_col, ["path", "info"])
        out = {}
        for row in rows:
            if row["path"] == _META_KEY:
                continue
            out[row["path"]] = FileRecord(**json.loads(row["info"]))
        return out

    def put_files(self, records: Iterable[FileRecord]) -> None:
        rows = [{"path": r.path, "info": json.dumps(asdict(r)), "v": [0.0, 0.0]} for r in records]
        if rows:
            self._client.upsert(self.files_col, rows)

    def drop_files(self, paths: Sequence[str]) -> None:
        if paths:
            self._client.delete(self.files_col, ids=list(paths))

    # chunks ----------------------------------------------------------------------------

    def put_chunks(self, rows: Sequence[ChunkRow]) -> None:
        data = [
            {
                "id": r.id,
                "file_id": r.file_id,
                "path": r.path,
                "source": r.source,
                "filetype": r.filetype,
                "page": r.page,
                "heading": r.heading[:1000],
                "ordinal": r.ordinal,
                "char_start": r.char_start,
                "char_end": r.char_end,
                "file_hash": r.file_hash,
                "text": _clip_utf8(r.text),
                "search_text": _clip_utf8(r.search_text or r.text),
                "dense": list(map(float, r.vector)),
            }
            # 48 sentences of a 384-dim embedder always fit; a 1024-dim one (bge-m3) fits ~23, and a
            # chunk with more is stored without them: retrieval embeds its sentences per query instead
            | ({"sentences": r.sentences if len(r.sentences) <= _TEXT_MAX else ""} if self.has_sentences else {})
            for r in rows
        ]
        for start in range(0, len(data), 1000):
            self._client.upsert(self.chunks_col, data[start : start + 1000])

    def delete_chunks(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), 2000):
            self._client.delete(self.chunks_col, ids=list(ids[start : start + 2000]))

    def delete_file_versions(self, record: FileRecord) -> None:
        """Delete every chunk any known version of this file may have left."""
        ids = [chunk_id(record.path, record.hash, i) for i in range(record.chunks)]
        if record.old_hash:
            ids += [chunk_id(record.path, record.old_hash, i) for i in range(record.old_chunks)]
        self.delete_chunks(ids)

    def remove_files(self, records: Sequence[FileRecord]) -> None:
        """Take files out of the KB. Marked "deleting" first, so a crash half-way is finished
        by the next ingest's recovery instead of leaving chunks of a file nobody lists."""
        if not records:
            return
        for r in records:
            r.status = "deleting"
        self.put_files(records)
        for r in records:
            self.delete_file_versions(r)
        self.drop_files([r.path for r in records])

    def chunk_count(self) -> int:
        res = self._client.query(self.chunks_col, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def all_chunks(self, fields: Sequence[str] = ("id", "path", "text", "ordinal")) -> list[dict]:
        return self._query_all(self.chunks_col, list(fields))

    def _query_all(self, collection: str, fields: list[str]) -> list[dict]:
        it = self._client.query_iterator(collection, batch_size=1000, filter="", output_fields=fields)
        out: list[dict] = []
        try:
            while True:
                batch = it.next()
                if not batch:
                    break
                out.extend(dict(r) for r in batch)
        finally:
            it.close()
        return out

    # search ----------------------------------------------------------------------------

    HIT_FIELDS = ["path", "source", "filetype", "page", "heading", "ordinal", "char_start", "char_end", "text", "file_id", "file_hash"]

    # What a window lookup needs to find a hit's neighbours: Milvus Lite materialises every
    # output field of every candidate, and the text is most of those bytes.
    LOCATE_FIELDS = ["path", "file_hash", "ordinal", "file_id"]

    def search_dense(self, vector, limit: int, expr: str = "", fields: Sequence[str] | None = None) -> list[tuple[str, float, dict]]:
        res = self._client.search(
            self.chunks_col,
            data=[list(map(float, vector))],
            anns_field="dense",
            limit=limit,
            filter=expr,
            output_fields=list(fields) if fields is not None else self.HIT_FIELDS,
            search_params={"metric_type": self.dense_metric},
        )
        return [(h["id"], float(h["distance"]), h["entity"]) for h in res[0]]

    def search_sparse(self, text: str, limit: int, expr: str = "", fields: Sequence[str] | None = None) -> list[tuple[str, float, dict]]:
        fields = list(fields) if fields is not None else self.HIT_FIELDS
        res = self._client.search(
            self.chunks_col,
            data=[text],
            anns_field="sparse",
            limit=limit,
            filter=expr,
            output_fields=fields,
            search_params={"metric_type": "BM25"},
        )
        # Milvus Lite reports BM25 as a negated distance, a server as the score itself.
        return [(h["id"], abs(float(h["distance"])), h["entity"]) for h in res[0]]

    def cjk_share(self, sample: int = 2000) -> float:
        """The share of files written mostly in CJK, judged on each file's first chunk (of up to
        ``sample`` files): whether a question in one language is about documents in another."""
        rows = self._client.query(self.chunks_col, filter="ordinal == 0", output_fields=["text"], limit=sample)
        return sum(is_cjk(r.get("text") or "") for r in rows) / len(rows) if rows else 0.0

    def mentions(self, word: str) -> bool:
        """Whether any chunk (text or heading path) holds ``word`` as a whole token, in any of
        its usual letter cases: the BM25 analyzer does not lower-case, so each spelling is a
        term of its own, and one sparse search over all of them answers at index speed."""
        spellings = dict.fromkeys([word, word.lower(), word.upper(), word.capitalize()])
        return bool(self.search_sparse(" ".join(spellings), 1, fields=["path"]))

    def neighbours(self, spans: Sequence[tuple[str, str, int, int]], with_vectors: Sequence[str] = ()) -> list[dict]:
        """The chunks of each (path, file_hash, first ordinal, last ordinal) span, by primary key
        (ids derive from path, hash and ordinal; a get by key costs half a filtered query in Milvus
        Lite). The hash keeps a half-replaced file's other version out of a window; ordinals past
        the file's end simply are not found. Rows whose id is in ``with_vectors`` carry ``dense``."""
        ids: list[str] = []
        for path, fhash, lo, hi in spans:
            if not _HASH_RE.match(fhash or "") or not path:
                continue
            ids.extend(chunk_id(path, fhash, o) for o in range(max(0, int(lo)), int(hi) + 1))
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        wanted = set(with_vectors)
        # one round trip: the vectors of a whole window cost less than a second request
        fields = ["id"] + self.HIT_FIELDS + (["dense"] if wanted else [])
        rows = [dict(r) for r in self._client.get(self.chunks_col, ids=ids, output_fields=fields)]
        for row in rows:
            if "dense" in row and row["id"] not in wanted:
                del row["dense"]
        return rows

    def sentence_vectors(self, ids: Sequence[str]) -> dict[str, object]:
        """The stored sentence vectors of these chunks, by id (chunks stored without any are absent)."""
        if not ids or not self.has_sentences or self.record is None:
            return {}
        rows = self._client.get(self.chunks_col, ids=list(ids), output_fields=["sentences"])
        out = {}
        for r in rows:
            m = unpack_vectors(r.get("sentences") or "", self.record.dim)
            if m is not None:
                out[r["id"]] = m
        return out

    def texts(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        return {r["id"]: r["text"] for r in self._client.get(self.chunks_col, ids=list(ids), output_fields=["text"])}

    def vectors(self, ids: Sequence[str]) -> dict[str, list[float]]:
        if not ids:
            return {}
        rows = self._client.get(self.chunks_col, ids=list(ids), output_fields=["dense"])
        return {r["id"]: r["dense"] for r in rows}

    # size ------------------------------------------------------------------------------

    def size_on_disk(self) -> int | None:
        if self.settings.milvus_uri:
            return None
        return _dir_size(kb_path(self.settings, self.name))


def _clip_utf8(text: str, limit: int = _TEXT_MAX) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def _dir_size(path: Path) -> int:
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
        client = _client(settings.milvus_uri, settings.milvus_token)
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
        client = _client(settings.milvus_uri, settings.milvus_token)
        try:
            prefix = _server_prefix(name)
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
    lock = _KBLock(directory, name)  # refuses while another process uses it
    try:
        trash = directory.with_name(f".{name}.deleting-{os.getpid()}")
        # Rename first so a crash mid-delete never leaves a half-deleted KB that looks valid.
        directory.rename(trash)
    finally:
        lock.release()
    shutil.rmtree(trash, ignore_errors=True)
