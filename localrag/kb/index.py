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

The modules, imports pointing one way (each imports only those above it):

* ``records.py``: the data (``KBRecord``, ``FileRecord``, ``ChunkRow``), ``chunk_id``/``file_id``
  and the packed sentence vectors; it talks to nothing.
* ``schema.py``: the two collections' fields, indexes and BM25 analyzer.
* ``storage.py``: where a KB lives: names, the Milvus connection, the lock on a local KB, and
  ``list_kbs``/``remove_kb`` for whole KBs.
* this module: ``Index``, an open KB: its manifest, its chunks and the searches over them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, fields
from typing import Iterable, Sequence

from localrag.errors import BadInput, KBNotFound
from localrag.kb.records import (
    SCHEMA_VERSION,
    ChunkRow,
    FileRecord,
    KBRecord,
    chunk_id,
    file_id,
    pack_vectors,
    unpack_vectors,
)
from localrag.kb.schema import (
    ANALYZER,
    META_KEY,
    STOP_WORDS,
    TEXT_MAX,
    clip_utf8,
    create_chunks_collection,
    create_files_collection,
)
from localrag.kb.storage import (
    KB_NAME_RE,
    KBLock,
    connect,
    dir_size,
    kb_path,
    list_kbs,
    remove_kb,
    server_prefix,
    validate_name,
)
from localrag.lang import is_cjk

# what callers imported from here before the records, schema and storage moved out; they keep working
__all__ = [
    "ANALYZER", "KB_NAME_RE", "SCHEMA_VERSION", "STOP_WORDS", "ChunkRow", "FileRecord", "Index", "KBRecord",
    "chunk_id", "file_id", "kb_path", "list_kbs", "pack_vectors", "remove_kb", "unpack_vectors", "validate_name",
]

_RECORD_FIELDS = {f.name for f in fields(FileRecord)}

_HASH_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


# --- the KB -------------------------------------------------------------------------------


class Index:
    """An open knowledge base. Keep it while working; ``close()`` releases the database."""

    def __init__(self, settings, name: str, client, prefix: str, lock: KBLock | None, lite_uri: str | None):
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
            client = connect(settings.milvus_uri, settings.milvus_token)
            idx = cls(settings, name, client, server_prefix(name), None, None)
        else:
            directory = kb_path(settings, name)
            if not create and not (directory / "milvus.db").exists():
                raise KBNotFound(
                    f"knowledge base '{name}' does not exist",
                    hint="Create it by ingesting documents into it, or pick an existing one.",
                    remedy="ingest", remedy_args={"kb": name},
                )
            lock = KBLock(directory, name)
            try:
                uri = str(directory / "milvus.db")
                client = connect(uri, None)
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
            rows = c.get(self.files_col, ids=[META_KEY], output_fields=["info"])
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
        c = self._client
        if not c.has_collection(self.chunks_col):
            create_chunks_collection(c, self.chunks_col, dim)
        if not c.has_collection(self.files_col):
            create_files_collection(c, self.files_col)
        c.load_collection(self.chunks_col)
        c.load_collection(self.files_col)
        self._check_fields()
        self.record = KBRecord(self.name, embedder_id, int(dim), time.time(), chunk_settings=chunk_settings or {})
        c.upsert(self.files_col, [{"path": META_KEY, "info": json.dumps(asdict(self.record)), "v": [0.0, 0.0]}])
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
            if row["path"] == META_KEY:
                continue
            info = json.loads(row["info"])
            # a row written by a newer localrag may carry fields this one does not know
            out[row["path"]] = FileRecord(**{k: v for k, v in info.items() if k in _RECORD_FIELDS})
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
                "text": clip_utf8(r.text),
                "search_text": clip_utf8(r.search_text or r.text),
                "dense": list(map(float, r.vector)),
            }
            # 48 sentences of a 384-dim embedder always fit; a 1024-dim one (bge-m3) fits ~23, and a
            # chunk with more is stored without them: retrieval embeds its sentences per query instead
            | ({"sentences": r.sentences if len(r.sentences) <= TEXT_MAX else ""} if self.has_sentences else {})
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
        return dir_size(kb_path(self.settings, self.name))
