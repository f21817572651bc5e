"""localrag: local, offline answers over your documents with the DeepSeek-R1 distills."""

__version__ = "0.1.0"
