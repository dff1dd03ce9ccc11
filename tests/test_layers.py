"""The layers of Rhone Local (docs/architecture.md, "Layers"), enforced on the source:

- the store owns every SQL statement: outside `rhone_local/store/`, no module imports sqlite3, calls `.execute`,
  or holds SQL in a string literal (the statements that administer apps' own databases too:
  `rhone_local/store/app_databases.py`);
- the API and the operations' request-time checks depend on the domain, the store and the narrow interfaces of
  `rhone_local/ports.py` only: never on an engine, the runner, the pipeline, promotion stages or the edge, which
  `server.py` injects;
- routers decide no policy: they start no operation and judge no environment busy themselves (the operation kinds
  do, in `rhone_local/operations/`), reach the store only through the composed `Store`, and touch no stage machinery.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "rhone_local"
SQL_TEXT = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|"
    r"DROP\s+(TABLE|INDEX)|ALTER\s+TABLE|PRAGMA\s+\w+|WHERE\s+[\w.]+\s*(=|IN\b|IS\b|<|>|!=)|json_extract|RETURNING\s+\*|"
    r"[\w.]+\s*(=|!=|<>|<=|>=|<|>|\bLIKE)\s*\?)",  # a condition on a placeholder: a WHERE fragment
    re.S,
)
RAW_QUERY_METHODS = {"execute", "executemany", "executescript"}


def _modules(root: Path) -> list[tuple[str, ast.Module]]:
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text())) for p in sorted(root.rglob("*.py"))]


def sql_outside_the_store(root: Path = LOCAL) -> list[str]:
    """Every place outside `rhone_local/store/` that imports sqlite3, calls a raw query method (`.execute`, or the
    store's `.one`/`.all` with SQL), or holds SQL text in a string literal."""
    found = []
    for name, tree in _modules(root):
        if name.startswith("rhone_local/store/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlite3" for a in node.names):
                found.append(f"{name}:{node.lineno}: import sqlite3")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlite3":
                found.append(f"{name}:{node.lineno}: from sqlite3")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in RAW_QUERY_METHODS:
                    found.append(f"{name}:{node.lineno}: .{node.func.attr}(")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.search(node.value):
                found.append(f"{name}:{node.lineno}: SQL text {node.value[:60]!r}")
    return found


def test_no_sql_outside_the_store() -> None:
    assert sql_outside_the_store() == []


def test_the_sql_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The check itself: a module with each forbidden thing is reported once per thing (a check that cannot fail
    proves nothing)."""
    package = tmp_path / "rhone_local" / "api"
    package.mkdir(parents=True)
    (package / "leaky.py").write_text(
        "import sqlite3\n"
        "from sqlite3 import Row\n"
        "def f(store, c):\n"
        "    c.execute('SELECT 1')\n"
        "    store.page('apps', 'project_id = ?', ())\n"
        '    return store.one(f"SELECT * FROM apps WHERE id = {c}")\n'
    )
    (tmp_path / "rhone_local" / "store").mkdir()
    (tmp_path / "rhone_local" / "store" / "fine.py").write_text("import sqlite3\nsqlite3.connect(':memory:')\n")
    import tests.test_layers as layers

    saved = layers.ROOT
    layers.ROOT = tmp_path
    try:
        found = layers.sql_outside_the_store(tmp_path / "rhone_local")
    finally:
        layers.ROOT = saved
    assert [f.split(": ", 1)[1].split(" ")[0] for f in found] == [
        "import",
        "from",
        ".execute(",
        "SQL",  # the WHERE fragment ('SELECT 1' alone is no statement the pattern knows)
        "SQL",  # the f-string's SELECT
    ], found


def test_local_services_have_one_implementation_each() -> None:
    from rhone_local.domain.topology import LOCAL_SERVICES
    from rhone_local.store.app_databases import LOCAL_SERVICE_SCHEMAS

    assert set(LOCAL_SERVICE_SCHEMAS) == set(LOCAL_SERVICES)


# What each layer may import of rhone_local (its own package included). `blobs` and `artifacts` are the content-
# addressed storage the API reads and writes; `app_logs` reads log files; `notify` wakes the workers.
LAYER_IMPORTS = {
    "rhone_local/api/": {"api", "domain", "store", "operations", "ports", "notify", "blobs", "artifacts", "app_logs"},
    "rhone_local/operations/": {"domain", "store", "operations", "ports", "blobs"},
}
# Implementations the layers above must never load, even indirectly.
IMPLEMENTATIONS = (
    "engines",
    "runner",
    "pipeline",
    "promotion",
    "topology",
    "edge",
    "edge_feed",
    "edge_process",
    "edge_supervisor",
    "workers",
    "provisioning",
    "sandbox",
    "reconciler",
    "retention",
    "server",
)


def _imported(node: ast.AST) -> list[str]:
    """The rhone_local modules an import statement names (`from rhone_local import x` names `x`)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] if node.module != "rhone_local" else [f"rhone_local.{a.name}" for a in node.names]
    else:
        return []
    return [n.split(".")[1] for n in names if n.startswith("rhone_local.")]


def imports_across_layers(root: Path = LOCAL) -> list[str]:
    """Every import (at module level or inside a function) of a layer of something it may not use."""
    found = []
    for name, tree in _modules(root):
        allowed = next((a for prefix, a in LAYER_IMPORTS.items() if name.startswith(prefix)), None)
        if allowed is None:
            continue
        for node in ast.walk(tree):
            for module in _imported(node):
                if module not in allowed and module != "__version__":
                    found.append(f"{name}:{node.lineno}: rhone_local.{module}")
    return found


def test_the_api_and_the_operations_import_only_their_interfaces() -> None:
    assert imports_across_layers() == []


def test_the_import_check_finds_what_it_forbids(tmp_path: Path) -> None:
    package = tmp_path / "rhone_local" / "api"
    package.mkdir(parents=True)
    (package / "wired.py").write_text(
        "from rhone_local import __version__, app_logs\n"
        "from rhone_local.store import Store\n"
        "import rhone_local.runner\n"
        "def f():\n"
        "    from rhone_local.pipeline import build_pipeline\n"
        "    from rhone_local import engines\n"
    )
    import tests.test_layers as layers

    saved = layers.ROOT
    layers.ROOT = tmp_path
    try:
        found = layers.imports_across_layers(tmp_path / "rhone_local")
    finally:
        layers.ROOT = saved
    assert [f.split(": ", 1)[1] for f in found] == [
        "rhone_local.runner",
        "rhone_local.pipeline",
        "rhone_local.engines",
    ], found


# What only an operation kind does: record an operation, decide an environment is busy (store methods), and the stage
# machinery (registries, handlers, the stage implementations' interfaces).
KIND_ONLY_CALLS = {"create_operation", "live_operations"}
STAGE_MACHINERY = {"kinds", "Kind", "Advance", "Handler", "onward", "staged", "registry", "topology_stages"}


# The error constructors whose first argument is an error code; the API's own generic codes stay the routers'.
ERROR_CONSTRUCTORS = {"conflict", "forbidden", "DomainError", "StageFailed"}
API_OWN_CODES = {"not_found"}


def _raised_code(node: ast.AST) -> str | None:
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
    return node.args[0].value if called in ERROR_CONSTRUCTORS and isinstance(node.args[0].value, str) else None


def policy_codes(root: Path = LOCAL) -> set[str]:
    """The error codes `rhone_local/operations/` raises: the policy of the operation kinds and access changes."""
    modules = [tree for name, tree in _modules(root) if name.startswith("rhone_local/operations/")]
    return {code for tree in modules for node in ast.walk(tree) if (code := _raised_code(node))} - API_OWN_CODES


def _writes_through_the_store(node: ast.AST) -> bool:
    """A store transaction opened (`.write()`) or one handed to a store method (`store.x(c, …)`,
    `get_store(request).x(…, tx=c)`)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "write" and not node.args:
        return True
    receiver = node.func.value
    on_store = (isinstance(receiver, ast.Name) and receiver.id == "store") or (
        isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name) and receiver.func.id == "get_store"
    )
    passes_tx = any(isinstance(a, ast.Name) and a.id in ("c", "tx") for a in node.args) or any(
        k.arg == "tx" for k in node.keywords
    )
    return on_store and passes_tx


def policy_in_routers(root: Path = LOCAL) -> list[str]:
    """Every place in `rhone_local/api/` that does what only an operation kind (or `operations/access.py`) may:
    calls a kind-only store method, names the stage machinery (`*Stages` interfaces included), imports a module of
    the store's package instead of the composed `Store`, opens a store transaction or hands one to a store method,
    or raises an error code that `rhone_local/operations/` owns."""
    found = []
    owned_codes = policy_codes(root)
    for name, tree in _modules(root):
        if not name.startswith("rhone_local/api/"):
            continue
        for node in ast.walk(tree):
            if _writes_through_the_store(node):
                found.append(f"{name}:{node.lineno}: writes through the store .{node.func.attr}(")
            if _raised_code(node) in owned_codes:
                found.append(f"{name}:{node.lineno}: raises {_raised_code(node)}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in KIND_ONLY_CALLS
            ):
                found.append(f"{name}:{node.lineno}: .{node.func.attr}(")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rhone_local.store."):
                found.append(f"{name}:{node.lineno}: {node.module}")
            else:
                named = [a.name for a in node.names] if isinstance(node, ast.ImportFrom | ast.Import) else []
                named += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                named += [node.attr] if isinstance(node, ast.Attribute) else []
                for word in named:
                    last = word.rsplit(".", 1)[-1]
                    if last in STAGE_MACHINERY or last.endswith("Stages"):
                        found.append(f"{name}:{node.lineno}: {word}")
    return found


def test_routers_leave_policy_to_the_operation_kinds() -> None:
    assert policy_in_routers() == []


def test_the_router_check_finds_what_it_forbids(tmp_path: Path) -> None:
    package = tmp_path / "rhone_local" / "api"
    package.mkdir(parents=True)
    (tmp_path / "rhone_local" / "operations").mkdir()
    (tmp_path / "rhone_local" / "operations" / "deploy.py").write_text(
        "def approval(row):\n    raise conflict('binding_missing', 'bind them first')\n"
    )
    (package / "thick.py").write_text(
        "from rhone_local.store import Store\n"
        "from rhone_local.store.operations import OperationsStore\n"
        "from rhone_local.operations import promote\n"
        "from rhone_local.operations.kinds import Advance\n"
        "def route(store, c):\n"
        "    store.live_operations(c, 'env_1', ('scale',), exclude='')\n"
        "    store.create_operation(c, kind='scale')\n"
        "    promote.kinds(None)\n"
        "    promote.check_promotion(store, None, {}, {})\n"
        "    x: promote.PromotionStages\n"
        "    with store.write() as c:\n"
        "        store.revoke_token(c, 'tok_1')\n"
        "    get_store(request).add_member(c, 'ws_1', 'a@b.c', 'a', 'viewer')\n"
        "    store.advance_operation({}, 'validating', tx=c)\n"
        "    raise conflict('binding_missing', 'missing provider bindings cannot be approved away')\n"
        "    raise not_found('deployment', 'dep_1')\n"
        "    store.deployment('dep_1')\n"
    )
    import tests.test_layers as layers

    saved = layers.ROOT
    layers.ROOT = tmp_path
    try:
        found = layers.policy_in_routers(tmp_path / "rhone_local")
    finally:
        layers.ROOT = saved
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted(
        [
            "rhone_local.store.operations",
            "rhone_local.operations.kinds",  # the module named in the import
            "Advance",
            ".live_operations(",
            ".create_operation(",
            "kinds",
            "PromotionStages",
            "writes through the store .write(",
            "writes through the store .revoke_token(",
            "writes through the store .add_member(",
            "writes through the store .advance_operation(",
            "raises binding_missing",
            "writes through the store .live_operations(",
            "writes through the store .create_operation(",
        ]
    ), found


def test_importing_the_api_loads_no_implementation() -> None:
    """Indirect imports too: the whole API (every router) and every operation module, in a fresh interpreter."""
    probe = (
        "import sys, pkgutil, importlib\n"
        "import rhone_local.api.app, rhone_local.operations\n"
        "for package in (rhone_local.api, rhone_local.operations):\n"
        "    for info in pkgutil.iter_modules(package.__path__):\n"
        "        importlib.import_module(f'{package.__name__}.{info.name}')\n"
        f"print(sorted(m for m in {IMPLEMENTATIONS!r} if 'rhone_local.' + m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Files outside the repository (product notes, research) and their numbering: the code must not lean on them.
OUTSIDE_CITATIONS = re.compile(r"PRODUCT\.md|domain\.md|\b[Ii]nvariants? \d")
DOC_REFERENCE = re.compile(r"docs/([\w-]+\.md)")


def citations(paths: list[Path]) -> tuple[list[str], list[str]]:
    """Lines citing something outside the repository, and references to a `docs/` file that does not exist."""
    outside, missing = [], []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT).as_posix()}:{number}"
            if OUTSIDE_CITATIONS.search(line):
                outside.append(where)
            missing += [
                f"{where}: docs/{name}" for name in DOC_REFERENCE.findall(line) if not (ROOT / "docs" / name).is_file()
            ]
    return outside, missing


def test_the_server_cites_only_the_repository() -> None:
    paths = sorted(LOCAL.rglob("*.py")) + sorted((ROOT / "tests" / "local").rglob("*.py"))
    assert citations(paths) == ([], [])


def test_the_citation_check_finds_what_it_forbids(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text("# Architecture\n")
    cited = tmp_path / "cited.py"
    cited.write_text(
        '"""The rules (domain.md §6, invariants 14, 16–18)."""\n'
        "# see PRODUCT.md §5\n"
        "# docs/architecture.md, docs/invariants.md\n"
        "# RFC 9110 §7.6.1 is a standard, not a file of ours\n"
    )
    import tests.test_layers as layers

    saved = layers.ROOT
    layers.ROOT = tmp_path
    try:
        found = layers.citations([cited])
    finally:
        layers.ROOT = saved
    assert found == (["cited.py:1", "cited.py:2"], ["cited.py:3: docs/invariants.md"])


def test_every_module_of_rhone_local_imports() -> None:
    """A name moved between modules breaks an importer that only the slow tier runs (the edge process, the
    server): import every module here, in a fresh interpreter."""
    probe = (
        "import importlib, pkgutil, rhone_local\n"
        "for info in pkgutil.walk_packages(rhone_local.__path__, 'rhone_local.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "print('imported')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "imported"), result.stderr
