"""GGUF files: the header walk, the checks before llama.cpp opens a file, and split-file names.

The bottom of the model layer: the store checks a file here when it comes in, the engine before
it loads one. Nothing here knows about the store's layout or about llama.cpp.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from localrag.errors import BadFile, NotInstalled
from localrag.units import format_size

if TYPE_CHECKING:
    from localrag.models.catalogue import ModelSpec

@dataclass
class GGUFInfo:
    path: Path
    arch: str | None
    n_layers: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    vocab: int | None
    file_type: str | None  # "Q4_K_M", ... from general.file_type
    name: str | None
    expected_bytes: int  # header + every tensor's data: the least the file must hold
    file_bytes: int
    split_count: int = 1




def is_gguf(path: Path) -> bool:
    """Whether ``path`` starts with the GGUF magic (cheap: four bytes)."""
    import gguf

    with Path(path).open("rb") as fh:
        head = fh.read(4)
    return len(head) == 4 and int.from_bytes(head, "little") == gguf.GGUF_MAGIC


def quick_check_gguf(path: Path) -> None:
    """Cheap check before llama.cpp opens a file: it exists and starts like a GGUF.

    The full header walk (``read_gguf``) takes seconds on a 150k-token vocabulary, so it runs at
    import/pull/verify time; here only the magic and version are read.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise NotInstalled(
            f"model file not found: {path}",
            hint="Download the model again, or import a GGUF file you already have.",
            remedy="install_model",
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or int.from_bytes(head[:4], "little") != gguf.GGUF_MAGIC:
        raise BadFile(
            f"{path} is not a GGUF model file",
            hint="Download the model again, or import a .gguf file.",
            remedy="install_model",
        )
    version = int.from_bytes(head[4:8], "little")
    if version not in gguf.READER_SUPPORTED_VERSIONS:
        raise BadFile(f"{path}: unsupported GGUF version {version}", hint="This file was written by a newer tool: update localrag.")


def _reader(path: Path):
    """gguf.GGUFReader, 3x faster on big vocabularies.

    The reader slices its np.memmap once per metadata value (500k times for a 150k-token
    vocabulary) and every memmap slice pays numpy's memmap bookkeeping; a plain ndarray view of
    the same mapping reads the same bytes without it.
    """
    import gguf
    import numpy as np

    class _Reader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            if type(self.data) is np.memmap:
                self.data = self.data.view(np.ndarray)
            return super()._get(offset, dtype, count, override_order)

    return _Reader(path)


def read_gguf(path: Path) -> GGUFInfo:
    """Walk the GGUF header with the gguf package; BadInput for anything llama.cpp would choke on."""
    import gguf

    quick_check_gguf(path)
    size = path.stat().st_size
    try:
        reader = _reader(path)
    except (ValueError, KeyError, IndexError, OverflowError, TypeError) as exc:
        # The reader maps every tensor; a short file fails there (numpy cannot shape the rest).
        raise BadFile(
            f"{path} is truncated or damaged: its GGUF header does not match its {format_size(size)} of data ({exc})",
            hint="The copy or download was probably cut short: copy or download it again.",
        ) from None

    def scalar(key: str):
        f = reader.fields.get(key)
        if f is None:
            return None
        with contextlib.suppress(Exception):
            return f.contents()
        return None

    expected = reader.data_offset
    for t in reader.tensors:
        expected = max(expected, int(t.data_offset) + int(t.n_bytes))
    arch = scalar("general.architecture")
    ftype = scalar("general.file_type")
    ftype_name = None
    if ftype is not None:
        with contextlib.suppress(ValueError):
            ftype_name = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_")
            if ftype_name == "ALL_F32":
                ftype_name = "F32"
    vocab = scalar(f"{arch}.vocab_size")
    if vocab is None:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else None
    info = GGUFInfo(
        path=path,
        arch=arch,
        n_layers=scalar(f"{arch}.block_count"),
        n_embd=scalar(f"{arch}.embedding_length"),
        n_head=scalar(f"{arch}.attention.head_count"),
        n_head_kv=scalar(f"{arch}.attention.head_count_kv"),
        vocab=int(vocab) if vocab is not None else None,
        file_type=ftype_name,
        name=scalar("general.name"),
        expected_bytes=expected,
        file_bytes=size,
        split_count=int(scalar("split.count") or 1),
    )
    if info.split_count == 1 and size < expected:
        raise BadFile(
            f"{path} is truncated: it holds {format_size(size)} but its header describes {format_size(expected)}",
            hint="The copy or download was cut short: copy or download it again.",
        )
    return info


def check_against_spec(info: GGUFInfo, spec: "ModelSpec") -> list[str]:
    """What in the file contradicts the catalogue entry (empty: it is that model)."""
    problems = []
    pairs = [
        ("architecture", info.arch, spec.arch),
        ("layers", info.n_layers, spec.n_layers),
        ("embedding size", info.n_embd, spec.n_embd),
        ("attention heads", info.n_head, spec.n_head),
        ("KV heads", info.n_head_kv, spec.n_head_kv),
    ]
    for what, got, want in pairs:
        if got is not None and got != want:
            problems.append(f"{what} {got} (expected {want})")
    if info.arch is None:
        problems.append("no general.architecture in the header")
    return problems



def shard_paths(path: Path) -> list[Path]:
    """All files of a split GGUF (name-00001-of-00003.gguf), or just ``path``."""
    path = Path(path)
    m = re.match(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", path.name)
    if not m:
        return [path]
    total = int(m.group(3))
    return [path.with_name(f"{m.group(1)}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]
