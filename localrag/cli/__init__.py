"""The typer command line: a front door on the public API (``localrag.api``)."""
