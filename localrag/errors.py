"""The errors localrag raises for problems a user can fix, as one hierarchy.

Every front door maps the same classes: the CLI to exit codes (and a command to run), the server
to HTTP statuses. Below the front doors nothing knows about either: an error says what went
wrong (``message``) and what would put it right (``hint``), in words that do not name a CLI
command; ``remedy`` optionally names the fix as a machine-readable key (see ``REMEDIES``) so a
front door can add its own way of doing it ("run `localrag models pull`", "POST /api/...").
"""

from __future__ import annotations

# The fixes a front door may know a concrete command for. Keys only; texts live in the doors.
REMEDIES = frozenset({
    "install_model",     # get a language model (download or import); args: spec
    "install_embedder",  # get an embedder; args: embedder
    "import_model",      # bring in a model file the user has (no download); args: spec
    "ingest",            # put documents into a knowledge base; args: kb
    "list_kbs",          # see which knowledge bases exist
    "list_models",       # see which models exist / are installed
    "doctor",            # check this machine's hardware and what fits
    "verify_models",     # re-check the installed model files
    "create_key",        # make an API key (server)
})


class LocalragError(Exception):
    """A problem the user can fix: a one-line ``message`` and an optional ``hint`` (the remedy).

    ``remedy`` (one of ``REMEDIES``) and ``remedy_args`` let a front door name its own command
    for the fix; ``hint`` stays readable without them.
    """

    #: HTTP status a server should answer with; the CLI maps classes to exit codes itself.
    http_status = 500
    #: a short machine-readable kind, e.g. for OpenAI-shaped error bodies
    code = "error"

    def __init__(self, message: str, *, hint: str | None = None, remedy: str | None = None,
                 remedy_args: dict | None = None):
        super().__init__(message)
        if remedy is not None and remedy not in REMEDIES:
            raise ValueError(f"unknown remedy {remedy!r}")
        self.message = message
        self.hint = hint
        self.remedy = remedy
        self.remedy_args = dict(remedy_args or {})

    def __str__(self) -> str:
        return self.message


class NotInstalled(LocalragError):
    """A model, embedder or optional package this needs is not on this machine."""

    http_status = 503
    code = "not_installed"


class KBNotFound(LocalragError):
    """No knowledge base of that name (or none this caller may see)."""

    http_status = 404
    code = "kb_not_found"


class KBBusy(LocalragError):
    """Another process holds the knowledge base (Milvus Lite allows one process per directory)."""

    http_status = 409
    code = "kb_busy"

    def __init__(self, message: str, *, pid: int | None = None, **kw):
        super().__init__(message, **kw)
        self.pid = pid


class DoesNotFit(LocalragError):
    """A model or context does not fit this machine's memory."""

    http_status = 507
    code = "does_not_fit"


class BadInput(LocalragError):
    """The request itself is wrong: an unknown name, an empty question, a bad flag value, a bad file."""

    http_status = 400
    code = "bad_input"


class BadFile(BadInput):
    """A file given to localrag is not what it should be (truncated, another format, another
    model). Bad input to a server; to the CLI an error that stopped the run, not bad usage."""

    code = "bad_file"


class BadConfig(LocalragError):
    """The configuration (config.toml, LOCALRAG_* variables, models.toml) is wrong."""

    http_status = 500
    code = "bad_config"


class PermissionDenied(LocalragError):
    """The operating system (or an API key's role) does not allow this."""

    http_status = 403
    code = "permission_denied"


__all__ = [
    "LocalragError", "NotInstalled", "KBNotFound", "KBBusy", "DoesNotFit", "BadInput", "BadFile", "BadConfig",
    "PermissionDenied", "REMEDIES",
]
