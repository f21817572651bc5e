"""Knowledge bases: files -> parse -> chunk -> embed -> index, and retrieval back out."""
