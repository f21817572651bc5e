"""The shared rich consoles, and how the CLI reports a ``LocalragError``: exit code and command.

Errors below the CLI say what would fix a problem; this is the one place that knows which
``localrag`` command does it (``REMEDY_COMMANDS``) and which exit code each kind of error gets.
"""

from __future__ import annotations

from rich.console import Console

from localrag import errors

# README's documented exit codes: 1 an error stopped the run, 2 bad usage (input or config).
EXIT_CODES: dict[type, int] = {
    errors.BadFile: 1,  # a file that is not what it should be: the command was used right
    errors.BadInput: 2,
    errors.BadConfig: 2,
}

REMEDY_COMMANDS: dict[str, str] = {
    "install_model": "localrag models pull {spec} (offline: localrag models import FILE)",
    "install_embedder": "localrag models pull {embedder} (offline: localrag models import FILE.zip --as {embedder})",
    "import_model": "localrag models import FILE --as {spec}",
    "ingest": "localrag ingest PATH --kb {kb}",
    "list_kbs": "localrag kb list",
    "list_models": "localrag models list",
    "doctor": "localrag doctor",
    "verify_models": "localrag models verify",
    "create_key": "localrag keys create NAME --kb KB:read",
}


def exit_code_for(exc: errors.LocalragError) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def command_for(exc: errors.LocalragError) -> str | None:
    """The CLI command that carries out the error's remedy, when there is one."""
    template = REMEDY_COMMANDS.get(exc.remedy or "")
    if template is None:
        return None
    args = {k: v for k, v in exc.remedy_args.items() if v}
    try:
        return " ".join(template.format_map(_Blank(args)).split())
    except (KeyError, ValueError):
        return None


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def hint_lines(exc: errors.LocalragError) -> list[str]:
    lines = [exc.hint] if exc.hint else []
    command = command_for(exc)
    if command and not any(command in line for line in lines):
        lines.append(f"Run: {command}")
    return lines


def stdout() -> Console:
    return Console()


def stderr() -> Console:
    return Console(stderr=True)
