"""The two Milvus collections of a knowledge base: their fields, indexes and BM25 analyzer.

``chunks`` holds one row per chunk: where it lies, its text, the text BM25 sees, its dense vector
and its sentences' packed vectors. ``files`` is the manifest: one row per ingested file plus one
row (``META_KEY``, an empty path) holding the KB's own record. pymilvus loads only when a
collection is created.
"""

from __future__ import annotations

META_KEY = ""  # the manifest row that holds the KB record; no file has an empty path

# Milvus' VARCHAR limits are in bytes; a chunk is bounded in tokens, so this is generous.
TEXT_MAX = 65535
PATH_MAX = 4096

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


def create_chunks_collection(client, name: str, dim: int) -> None:
    """The chunks collection, for vectors of ``dim`` dimensions."""
    from pymilvus import DataType, Function, FunctionType

    c = client
    s = c.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field("file_id", DataType.INT64)
    s.add_field("path", DataType.VARCHAR, max_length=PATH_MAX)
    s.add_field("source", DataType.VARCHAR, max_length=PATH_MAX)
    s.add_field("filetype", DataType.VARCHAR, max_length=32)
    s.add_field("page", DataType.INT64)
    s.add_field("heading", DataType.VARCHAR, max_length=PATH_MAX)
    s.add_field("ordinal", DataType.INT64)
    s.add_field("char_start", DataType.INT64)
    s.add_field("char_end", DataType.INT64)
    s.add_field("file_hash", DataType.VARCHAR, max_length=64)
    s.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
    # What BM25 sees: the heading path and the text (a question often names the section).
    s.add_field("search_text", DataType.VARCHAR, max_length=TEXT_MAX, enable_analyzer=True, analyzer_params=ANALYZER)
    s.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    # each sentence's own vector, for the sentence-level re-score of candidates: made at
    # ingest, so a query embeds only itself
    s.add_field("sentences", DataType.VARCHAR, max_length=TEXT_MAX)
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
    c.create_collection(name, schema=s, index_params=ip)


def create_files_collection(client, name: str) -> None:
    """The manifest collection: a JSON ``info`` per path."""
    from pymilvus import DataType

    c = client
    s = c.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("path", DataType.VARCHAR, is_primary=True, max_length=PATH_MAX)
    s.add_field("info", DataType.VARCHAR, max_length=TEXT_MAX)
    # Milvus requires a vector field in every collection; this one is never searched.
    s.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    ip = c.prepare_index_params()
    ip.add_index("v", index_type="FLAT", metric_type="L2")
    c.create_collection(name, schema=s, index_params=ip)


def clip_utf8(text: str, limit: int = TEXT_MAX) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")
