"""The shape of `rhone_cli`, checked from its source: no import circles, and each layer imports only the ones below it.

The graph counts every import a module can run — at the top, or inside a function (a lazy import still ties the two
modules together) — but not those under `if TYPE_CHECKING:`, which never run. Importing `a.b.c` runs `a/__init__.py`
and `a/b/__init__.py` too, so a package depends on its parents.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "rhone_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imported(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Every module `name` may import, with parent packages, skipping `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if _type_checking_only(node):
            pending.extend(getattr(node, "orelse", []))
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    with_parents = set()
    for module in found:
        parts = module.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        imported = _imported(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
        graph[name] = {module for module in imported if module in known and module != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_lazy_imports_and_parent_packages():
    # Control: without these edges the cycle test below could pass vacuously.
    graph = import_graph()
    assert "rhone_cli.http" in graph["rhone_cli.invocation"]  # imported inside a method
    assert "rhone_cli.commands" in graph["rhone_cli.commands.deploy"]  # its parent package
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_rhone_cli_has_no_import_cycles():
    assert cycles(import_graph()) == []


API_MODULE = "rhone_cli.api"


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def api_path_literals(source: str) -> list[str]:
    """String literals (f-string parts included) that spell an API path, docstrings aside."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        if "/v1" in node.value
    ]


def test_the_literal_check_sees_plain_and_formatted_strings():
    source = 'def f(x):\n    """GET /v1/x"""\n    return "/v1/a", f"/v1/b/{x}", "v1"\n'
    assert api_path_literals(source) == ["/v1/a", "/v1/b/"]


def test_every_api_path_is_spelled_in_the_api_module_only():
    found = {
        name: literals
        for name, path in modules().items()
        if name != API_MODULE and (literals := api_path_literals(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "build paths with rhone_cli/api.py (a typed method per endpoint) instead"


SHARED_COMMAND_MODULES = {"rhone_cli.commands", "rhone_cli.commands._common", "rhone_cli.commands._options"}


def test_command_modules_share_only_options_and_renderers():
    # A renderer or option set two commands need lives in render/ or commands/_options.py, not in one of them.
    graph = import_graph()
    reaching = {
        name: sorted(m for m in graph[name] if m.startswith("rhone_cli.commands.") and m not in SHARED_COMMAND_MODULES)
        for name in graph
        if name.startswith("rhone_cli.commands.") and name not in SHARED_COMMAND_MODULES
    }
    assert {name: found for name, found in reaching.items() if found} == {}


def test_renderers_call_no_api_and_no_command():
    graph = import_graph()
    renderers = [name for name in graph if name == "rhone_cli.render" or name.startswith("rhone_cli.render.")]
    assert len(renderers) > 1  # control: the package and its modules are seen
    forbidden = ("rhone_cli.commands", "rhone_cli.services", "rhone_cli.api", "rhone_cli.http", "rhone_cli.invocation")
    reaching = {name: sorted(m for m in graph[name] if m.startswith(forbidden)) for name in renderers}
    assert {name: found for name, found in reaching.items() if found} == {}
