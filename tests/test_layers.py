"""The package's shape is a rule, not a hope: imports point one way and nothing below the front
doors prints through a UI library, imports a web framework or changes the process environment.

Layers, lowest first: settings / errors / units -> models -> runtime -> kb -> rag -> api -> the
front doors (cli, server). A module may import its own layer and the ones below it, never above;
every import counts, the lazy ones inside functions too, because they are cycles all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "localrag"

RANK = {
    "settings": 0, "errors": 0, "units": 0, "lang": 0,
    "models": 1,
    "runtime": 2,
    "kb": 3,
    "rag": 4,
    "api": 5,
    "cli": 6, "server": 6, "__main__": 6, "process": 6,
}
FRONT_DOOR_ONLY = ("rich", "typer", "prompt_toolkit", "fastapi", "starlette", "uvicorn", "sse_starlette", "flask", "aiohttp")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "localrag" or len(parts) == 1:
        return None
    return parts[1]


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                out |= {id(n) for n in ast.walk(child)}
    return out


def _imports(path: Path, module: str, *, runtime_only: bool = False) -> list[tuple[str, int]]:
    """Every module this file imports (absolute names), with line numbers; ``runtime_only``
    leaves out the imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = _type_only(tree) if runtime_only else set()
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from localrag.kb import ingest` imports the module localrag.kb.ingest
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    found.append((sub, node.lineno))
    return found


def test_every_module_has_a_layer():
    unknown = [m for m in MODULES if m != "localrag" and _layer(m) not in RANK]
    assert unknown == [], f"give these a layer in tests/test_layers.py: {unknown}"


def test_imports_point_down():
    wrong = []
    for module, path in MODULES.items():
        own = _layer(module)
        if own is None:
            continue
        for target, line in _imports(path, module):
            layer = _layer(target)
            if layer is not None and layer in RANK and RANK[layer] > RANK[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {target} ({layer})")
    assert wrong == []


def test_no_import_cycles():
    graph = {m: {t for t, _ in _imports(p, m, runtime_only=True) if t in MODULES and t != m} for m, p in MODULES.items()}
    # the package __init__ is only a lazy index of names; it imports nothing at load time
    graph.pop("localrag", None)
    for deps in graph.values():
        deps.discard("localrag")
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in RANK and RANK[_layer(m)] < RANK["cli"]))
def test_below_the_front_doors_no_ui_web_or_environment_writes(module):
    path = MODULES[module]
    for target, line in _imports(path, module):
        assert target.split(".")[0] not in FRONT_DOOR_ONLY, f"{path.name}:{line} imports {target}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"{path.name}:{node.lineno} prints"
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                assert not (isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ"), (
                    f"{path.name}:{node.lineno} writes os.environ"
                )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called = ast.unparse(node.func)
            assert called not in {"os.environ.setdefault", "os.environ.update", "os.environ.pop", "os.putenv",
                                  "os.environ.clear", "os.unsetenv"}, f"{path.name}:{node.lineno} calls {called}"


def test_nothing_below_the_front_doors_changes_library_loggers():
    """Log levels are the application's to set (the CLI does); a library that silences others'
    loggers hides their errors from every other user of the process."""
    wrong = []
    for module, path in MODULES.items():
        if _layer(module) not in RANK or RANK[_layer(module)] >= RANK["cli"]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("setLevel", "setLogLevel"):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert wrong == []
