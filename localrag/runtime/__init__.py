"""Loaded models: the llama.cpp engine and its reasoning splitter, the embedder and the reranker."""
