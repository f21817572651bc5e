"""What a knowledge base stores, as plain data: its record, the manifest's file rows, the chunk rows
ingest hands the index, the ids derived from them and the packed sentence vectors.

Chunk ids are derived from (path, content hash, ordinal), so the ids of any manifest version of a
file can be recomputed: deleting a file's chunks never needs a filter expression over paths.
Nothing here talks to Milvus (``index.py`` does); numpy loads only when vectors are packed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Sequence

# 2: chunks carry their sentences' vectors (``sentences``); a schema-1 KB still works, and
# retrieval embeds those sentences at query time instead.
SCHEMA_VERSION = 2


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
    reader: int = 0  # parse.reader_version of its type when it was read (0 before versions existed)


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
