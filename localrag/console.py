"""The shared rich consoles and the one error type every command reports the same way."""

from __future__ import annotations

from rich.console import Console


class UserError(Exception):
    """A problem the user can fix; printed as one clear message, no traceback.

    ``exit_code`` follows the CLI's documented codes (README): 1 general, 2 usage.
    """

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def stdout() -> Console:
    return Console()


def stderr() -> Console:
    return Console(stderr=True)
