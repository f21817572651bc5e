"""Readers for the formats beyond Markdown/text/HTML/PDF/DOCX, one module per family.

Each reader is ``read_x(path, filetype) -> parse.ParsedDocument`` and raises ``parse.ParseError``
(a one-line reason) for a file it cannot read; ``parse._READERS`` maps file types to readers, and
imports a reader (and its library) only when a file of that type is met.
"""
