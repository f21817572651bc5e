"""Small-to-big windows: a hit grows into its chunk plus same-section neighbours.

Each of the top hits comes back with the chunks beside it (``RetrievalSettings.window_tokens``), so
a hit next to the answer still carries it and the overlapping pieces of one passage do not fill
several slots. The neighbours are fetched by primary key (``Index.neighbours``).
"""

from __future__ import annotations

from typing import Callable


def merge_window(chunks: list[dict]) -> str:
    """The text of consecutive chunks (sorted by ``char_start``) as one span of the document.
    Overlapping chunks share text, which appears once; between chunks that do not touch the
    document had only whitespace (chunks are trimmed), which becomes one blank line or a space."""
    out: list[str] = []
    end = None
    for c in chunks:
        text, start = c["text"], int(c.get("char_start", 0))
        if end is None:
            out.append(text)
        elif start < end:
            out.append(text[end - start :])
        else:
            out.append(("\n\n" if start - end >= 2 else " ") + text)
        end = max(end or 0, int(c.get("char_end", start + len(text))))
    return "".join(out)


def build_windows(
    index, order: list[str], k: int, entities: dict[str, dict], *, budget: int, max_chunk_tokens: int,
    count_tokens: Callable[[str], int] | None, vectors: dict | None = None, need_vectors=None,
) -> list[list[dict]]:
    """The top ``k`` hits as windows: [matched chunk, neighbours...]. A chunk already inside a
    better hit's window is not a hit of its own (it would repeat that text in another slot),
    and a window never grows into another window's chunks. The dense vectors of seeds not in
    ``need_vectors`` are fetched with the neighbours, into ``vectors``. ``budget``: the window's
    size in embedder tokens (``count_tokens``; without one a window is its chunk alone);
    ``max_chunk_tokens``: the chunker's ``max_tokens``."""
    # the chunker merges sections below a quarter of max_tokens, so a window of ``budget``
    # tokens rarely spans more chunks than this on either side
    reach = max(1, min(8, budget // max(16, max_chunk_tokens // 4)))
    taken: set[str] = set()
    windows: list[list[dict]] = []
    pos = 0
    while len(windows) < k and pos < len(order):
        batch = [c for c in order[pos : pos + 2 * k] if c not in taken]
        pos += 2 * k
        spans = []
        for c in batch:
            e = entities[c]
            o = int(e.get("ordinal", 0))
            spans.append((str(e.get("path", "")), str(e.get("file_hash", "")), o - reach, o + reach))
        with_vectors = [c for c in batch if need_vectors is not None and c not in need_vectors]
        by_pos: dict[tuple[int, int], dict] = {}
        try:
            rows = index.neighbours(spans, with_vectors=with_vectors)
        except Exception:
            if any("text" not in entities[c] for c in batch):
                raise  # a slim search brought only places: without the rows there is nothing to show
            rows = []  # windows are an improvement; a failed lookup leaves plain chunks
        for row in rows:
            if "dense" in row:
                if vectors is not None:
                    vectors[row["id"]] = row["dense"]
                del row["dense"]
            by_pos[(int(row["file_id"]), int(row["ordinal"]))] = row
        for c in batch:
            if len(windows) >= k:
                break
            if c in taken:
                continue
            e = entities[c]
            row = by_pos.get((int(e.get("file_id", 0)), int(e.get("ordinal", 0))))
            if row is not None and row["id"] == c:
                entities[c] = e = e | row  # the whole row: a slim search brought only its place
            if "text" not in e:
                continue  # deleted between the search and the lookup (another writer on a server)
            seed = e | {"id": c}
            members = grow_window(seed, by_pos, taken, budget, count_tokens)
            taken.update(m["id"] for m in members)
            windows.append(members)
    return windows


def grow_window(
    seed: dict, by_pos: dict, taken: set[str], budget: int, count_tokens: Callable[[str], int] | None
) -> list[dict]:
    """Add the same section's neighbours, nearest first and alternating sides, while the
    merged text stays within ``budget`` embedder tokens."""
    fid, o = int(seed.get("file_id", 0)), int(seed.get("ordinal", 0))
    members = [seed]
    lo = hi = o
    count = count_tokens
    if count is None:
        return members

    def fits(row: dict) -> bool:
        return (
            row["id"] not in taken
            and row.get("heading", "") == seed.get("heading", "")
            and row.get("source") == seed.get("source")  # a mail's attachments are sources of their own
            and int(row.get("page", -1)) == int(seed.get("page", -1))
        )

    open_sides = {1, -1}
    while open_sides:
        for side in (1, -1):
            if side not in open_sides:
                continue
            row = by_pos.get((fid, (hi + 1) if side > 0 else (lo - 1)))
            if row is None or not fits(row):
                open_sides.discard(side)
                continue
            trial = sorted(members + [row], key=lambda m: int(m.get("char_start", 0)))
            if count(merge_window(trial)) > budget:
                open_sides.discard(side)
                continue
            members.append(row)
            if side > 0:
                hi += 1
            else:
                lo -= 1
    return members
