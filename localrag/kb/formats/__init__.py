"""The readers, one module per family of formats.

Each reader is ``read_x(path, filetype) -> document.ParsedDocument`` and raises
``document.ParseError`` (a one-line reason) for a file it cannot read; ``parse._FAMILIES`` maps
file types to readers, and imports a reader (and its library) only when a file of that type is
met. Readers import ``document`` and each other, never ``parse``: one that opens documents of
any type inside its own (mail attachments) is given the dispatcher as its ``parse`` argument.
"""
