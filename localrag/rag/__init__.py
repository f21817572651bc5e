"""Retrieval-augmented answers: the prompt, the session (a conversation) over a knowledge base."""
