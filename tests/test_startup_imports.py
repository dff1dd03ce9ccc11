"""Start-up budget: `--version`, `--help` and a TAB must not import what only real commands need.

Each case runs a fresh venv python (a fresh interpreter is the only way to see what one invocation imports), runs rhone
the way the console script does, then prints `sorted(sys.modules)` as JSON after a marker line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import VALID_TOML

# What must stay out of sys.modules, and why. A name forbids the module and all of its submodules.
FORBIDDEN = {
    # The HTTP stack (httpx, httpcore, h11, ssl, certifi): tens of milliseconds; only commands that call an API.
    "httpx": "the HTTP client",
    # keyring probes its backends (SecretStorage/D-Bus, ...) on import: only login/logout/whoami and API commands.
    "keyring": "the OS keyring",
    # Progress bars pull in rich's console, live display and markup; --help is plain text (rich_markup_mode=None).
    "rich.progress": "rich progress bars",
    # The --json document models (pydantic): built only when a command writes a JSON document.
    "rhone_cli.documents": "rhone's --json document models",
    # rhone's API client wrapper, which imports httpx.
    "rhone_cli.http": "rhone's HTTP client",
    # The rhone.toml models (pydantic): only `config`, `init`, `deploy` and friends read rhone.toml.
    "rhone_cli.config.project": "rhone's rhone.toml models",
    # pydantic itself (with pydantic_core and its schema machinery) is the largest import in the tree. typer imports it
    # (typer._adapters) only to coerce parameter values, i.e. once a command's callback is about to run; `import
    # typer`, building the command tree, the eager --version and the top-level --help never reach that point, and the
    # completion walker (rhone_cli/completion.py) never coerces. So all of pydantic is forbidden for those cases.
    "pydantic": "pydantic",
    # The jq engine (a C extension) loads only when --jq is given; truststore and ssl only for https connections.
    "jq": "the jq engine",
    "truststore": "the OS trust store",
}
# Once typer descends into a subcommand it coerces the root callback's options with pydantic (typer._adapters), so
# `rhone config validate --help` loads pydantic through typer itself: there only our own models and the rest are
# forbidden.
FORBIDDEN_WITHOUT_PYDANTIC = {name: why for name, why in FORBIDDEN.items() if name != "pydantic"}
# `--version`, `--help` and a TAB on a command name read no file and write no JSON: the TOML parser and json (a few
# milliseconds each) stay out too. Reading a profile, rhone.toml or the completion cache loads them.
FORBIDDEN_FOR_NAMES = {**FORBIDDEN, "tomllib": "the TOML parser", "json": "the json module"}

MARKER = "@@rhone-startup-imports@@"

# Run rhone like the console script (rhone_cli.entry:run) or through main(), then report the loaded modules.
PROBE = f"""
import json, sys
args = json.loads(sys.argv[1])
how = sys.argv[2]
sys.argv = ["rhone", *args]
# The probe's own json is forgotten, so the report shows whether rhone imports it.
for name in [name for name in sys.modules if name == "json" or name.startswith("json.")]:
    del sys.modules[name]
encode = json.dumps
if how == "entry":
    from rhone_cli.entry import run
    try:
        run()
    except SystemExit as exit:
        status = exit.code
else:
    from rhone_cli.main import main
    status = main(args)
sys.stdout.flush()
print()
print({MARKER!r})
print(encode({{"status": status, "modules": sorted(sys.modules)}}))
"""

BASH_TAB = {"_RHONE_COMPLETE": "complete_bash", "COMP_WORDS": "rhone\nde", "COMP_CWORD": "1"}
ZSH_TAB = {"_RHONE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "rhone de"}
FISH_TAB = {
    "_RHONE_COMPLETE": "complete_fish",
    "_TYPER_COMPLETE_FISH_ACTION": "get-args",
    "_TYPER_COMPLETE_ARGS": "rhone de",
}


def probe(base_environ, tmp_path, args: list[str], how: str, environ: dict[str, str] | None = None):
    status, output, _stderr, modules = probe_with_stderr(base_environ, tmp_path, args, how, environ)
    return status, output, modules


def probe_with_stderr(base_environ, cwd, args: list[str], how: str, environ: dict[str, str] | None = None):
    """(exit status, stdout, stderr, sorted names of the loaded modules) of rhone run `how` in `cwd`."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), how],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base_environ, **(environ or {})},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    output, marker, report = proc.stdout.rpartition(f"\n{MARKER}\n")
    assert marker, proc.stdout + proc.stderr
    data = json.loads(report)
    return data["status"], output, proc.stderr, data["modules"]


def loaded(modules: list[str], forbidden: dict[str, str] | list[str]) -> list[str]:
    return sorted(m for m in modules for name in forbidden if m == name or m.startswith(name + "."))


@pytest.mark.parametrize("how", ["entry", "main"])
def test_version_imports_nothing_heavy(base_environ, tmp_path, how):
    status, output, modules = probe(base_environ, tmp_path, ["--version"], how)
    assert status == 0
    assert output.strip().startswith("rhone ")
    assert loaded(modules, FORBIDDEN_FOR_NAMES) == []


def test_version_fast_path_does_not_even_import_typer(base_environ, tmp_path):
    # rhone_cli/entry.py answers `rhone --version` (exactly that argv) before building the command tree.
    status, _, modules = probe(base_environ, tmp_path, ["--version"], "entry")
    assert status == 0
    assert loaded(modules, ["typer", "rhone_cli.main", "rhone_cli.commands"]) == []


@pytest.mark.parametrize("how", ["entry", "main"])
def test_help_imports_nothing_heavy(base_environ, tmp_path, how):
    status, output, modules = probe(base_environ, tmp_path, ["--help"], how)
    assert status == 0
    assert "Usage: rhone" in output
    assert "typer" in modules  # the probe really built the command tree
    assert loaded(modules, FORBIDDEN_FOR_NAMES) == []


def test_subcommand_help_imports_none_of_our_models(base_environ, tmp_path):
    status, output, modules = probe(base_environ, tmp_path, ["config", "validate", "--help"], "entry")
    assert status == 0
    assert "Usage: rhone config validate" in output
    assert loaded(modules, FORBIDDEN_WITHOUT_PYDANTIC) == []


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(BASH_TAB, "deploy", id="bash"),
        pytest.param(ZSH_TAB, "local -a _rhone_values=('deploy')", id="zsh"),
        pytest.param(FISH_TAB, "deploy\t", id="fish"),
    ],
)
@pytest.mark.parametrize("how", ["entry", "main"])
def test_completion_request_imports_nothing_heavy(base_environ, tmp_path, how, environ, expected):
    status, output, modules = probe(base_environ, tmp_path, [], how, environ)
    assert status == 0
    assert output.startswith(expected), output  # the request was answered, so the walker really ran
    assert "rhone_cli.completion" in modules
    assert loaded(modules, FORBIDDEN_FOR_NAMES) == []


def test_completing_a_deployment_id_imports_nothing_heavy(base_environ, tmp_path):
    """A TAB that asks the API (here: one that refuses) for deployment ids uses the standard library's HTTP client."""
    (tmp_path / "rhone.toml").write_text(VALID_TOML.replace('name = "hello"', 'name = "hello"\nworkspace = "local"', 1))
    environ = {
        "_RHONE_COMPLETE": "complete_fish",
        "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        "_TYPER_COMPLETE_ARGS": "rhone deploy show ",
        "RHONE_API_URL": "http://127.0.0.1:9",
        "RHONE_TOKEN": "rht_startup_0a1b2c3d",
        "RHONE_CACHE_DIR": str(tmp_path / "cache"),
    }
    status, output, modules = probe(base_environ, tmp_path, [], "entry", environ)
    assert status == 0 and output.strip() == ""
    assert "rhone_cli.completion_values" in modules and "socket" in modules  # it did try
    assert loaded(modules, FORBIDDEN) == []


def test_the_probe_sees_heavy_imports_when_a_command_needs_them(base_environ, tmp_path):
    # Control: a command that reads rhone.toml through the command tree does load the models, so the empty lists above
    # are not vacuous.
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    status, _, modules = probe(base_environ, tmp_path, ["config", "validate"], "main")
    assert status == 0
    assert {"rhone_cli.config.project", "pydantic"} <= set(loaded(modules, FORBIDDEN))


# -- the paths that need some of it: issue-15 budgets ------------------------------------------------------------------
# What an API read needs is httpx; what it does not need is everything that validates or decorates: the rhone.toml
# models and pydantic (finding rhone.toml and reading the names uses tomllib), the --json document models, the OS
# keyring (the token comes from RHONE_TOKEN here), progress bars.
FORBIDDEN_FOR_AN_API_READ = {name: why for name, why in FORBIDDEN.items() if name not in {"httpx", "rhone_cli.http"}}
# `config validate` of an invalid file validates with the models: pydantic and the rhone.toml models are its work;
# the rest is not. A valid file is answered by rhone_cli/config/_validate_command.py with the standard library alone:
# no command tree (typer) and no pydantic either.
FORBIDDEN_FOR_VALIDATION = {
    name: why for name, why in FORBIDDEN.items() if name not in {"pydantic", "rhone_cli.config.project"}
}
FORBIDDEN_FOR_A_VALID_FILE = [*FORBIDDEN, "typer", "rhone_cli.main", "rhone_cli.commands"]
# How many modules a path may import beyond its anchor process (rhone's own modules, the command tree, the stdlib
# pieces they use). Measured: `app ls --json` 48 beyond one httpx GET (114 while it validated rhone.toml with
# pydantic), `config validate` of a valid file 19 beyond `import typer` (rhone's own modules, tomllib, dataclasses;
# 157 while it built the command tree and the models); the margins leave room for small growth, not for a new heavy
# dependency.
EXTRA_MODULES_BUDGET = {"app ls --json": 60, "config validate": 25}
SHOP_TOML = (
    '[project]\nname = "shop"\nworkspace = "local"\n\n[app]\nname = "web"\n\n[process]\nstart = "python3 app.py"\n'
)
APPS = {"items": [{"id": "app_0123456789abcdef", "name": "web", "created_at": "2026-01-01T00:00:00Z"}]}


def anchor_modules(base_environ, tmp_path, code: str, *argv: str) -> list[str]:
    """sys.modules of a bare python process that runs `code` (the benchmark's anchor for a path)."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=base_environ,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def apps_server():
    """A stub API on a port the kernel picked, answering every GET with one page of apps; the paths asked for."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(APPS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_an_api_read_finds_rhone_toml_without_pydantic(base_environ, tmp_path, apps_server):
    url, asked = apps_server
    (tmp_path / "rhone.toml").write_text(SHOP_TOML)
    environ = {"RHONE_API_URL": url, "RHONE_TOKEN": "rht_startup_0a1b2c3d"}
    status, output, modules = probe(base_environ, tmp_path, ["app", "ls", "--json"], "entry", environ)
    assert (status, json.loads(output)) == (0, APPS["items"])
    assert [path.split("?")[0] for path in asked] == ["/v1/workspaces/local/projects/shop/apps"]  # names from the file
    assert {"rhone_cli.config.locate", "httpx"} <= set(modules)
    assert loaded(modules, FORBIDDEN_FOR_AN_API_READ) == []
    anchor = anchor_modules(base_environ, tmp_path, "import httpx, typer\nhttpx.get(sys.argv[1] + '/v1/x')", url)
    extra = sorted(set(modules) - set(anchor))
    assert len(extra) <= EXTRA_MODULES_BUDGET["app ls --json"], extra


def test_an_invalid_name_in_rhone_toml_is_still_reported_by_the_full_validation(base_environ, tmp_path, apps_server):
    # Names that tomllib alone cannot vouch for go through the models, which name the file, line and key (exit 2).
    url, asked = apps_server
    (tmp_path / "rhone.toml").write_text(SHOP_TOML.replace('name = "web"', 'name = "Web!"'))
    environ = {"RHONE_API_URL": url, "RHONE_TOKEN": "rht_startup_0a1b2c3d"}
    status, output, modules = probe(base_environ, tmp_path, ["app", "ls", "--json"], "entry", environ)
    error = json.loads(output)["error"]
    assert (status, error["code"], error["exit_code"]) == (2, "invalid_config", 2)
    assert [(p["key"], p["line"]) for p in error["details"]["problems"]] == [("app.name", 6)]
    assert "rhone_cli.config.project" in modules
    assert asked == []  # refused before any request


def test_config_validate_of_a_valid_file_imports_neither_typer_nor_pydantic(base_environ, tmp_path):
    (tmp_path / "rhone.toml").write_text(SHOP_TOML)
    status, output, modules = probe(base_environ, tmp_path, ["config", "validate"], "entry")
    assert (status, output) == (0, f"{tmp_path / 'rhone.toml'}: valid (project shop, app web)\n")
    assert "rhone_cli.config.rules" in modules  # the file really was checked
    assert loaded(modules, FORBIDDEN_FOR_A_VALID_FILE) == []
    extra = sorted(set(modules) - set(anchor_modules(base_environ, tmp_path, "import typer")))
    assert len(extra) <= EXTRA_MODULES_BUDGET["config validate"], extra


def test_config_validate_of_an_invalid_file_imports_only_what_validation_needs(base_environ, tmp_path):
    (tmp_path / "rhone.toml").write_text(SHOP_TOML.replace('start = "python3 app.py"', "start = 3"))
    status, output, modules = probe(base_environ, tmp_path, ["config", "validate"], "entry")
    assert status == 2 and output == ""  # the problems go to stderr, from the models
    assert {"rhone_cli.config.project", "pydantic"} <= set(modules)
    assert loaded(modules, FORBIDDEN_FOR_VALIDATION) == []


# What a warm `rhone artifact manifest` (the plain form, stat cache hit, no rhone.toml) loads beyond the interpreter's
# own start-up: these modules and nothing else. `re` (with enum, functools and collections), json, pathlib and
# rhone_cli.errors (an IntEnum) each cost more CPU time than the walk of thousands of unchanged files
# (bench/manifest.py); hashlib, tempfile and threading are for files that changed.
WARM_MANIFEST_MODULES = {
    "__future__",  # `from __future__ import annotations` imports it
    "errno",
    "rhone_cli",
    "rhone_cli.artifacts",
    "rhone_cli.artifacts._manifest_command",
    "rhone_cli.artifacts.manifest",
    "rhone_cli.entry",
    "rhone_cli.environment",
    "rhone_cli.output",
    "rhone_cli.plain_invocation",
    "rhone_cli.services",
    "rhone_cli.services.artifacts",
}

# Like PROBE, but importing nothing itself (PROBE's json would hide what rhone imports): the modules rhone added.
LEAN_PROBE = f"""
import sys
args = sys.argv[1:]
sys.argv = ["rhone", *args]
before = set(sys.modules)
from rhone_cli.entry import run
try:
    run()
except SystemExit as exit:
    status = exit.code
sys.stdout.flush()
print()
print({MARKER!r})
print(status)
print(" ".join(sorted(set(sys.modules) - before)))
"""


def lean_probe(base_environ, cwd, args: list[str]) -> tuple[object, str, set[str]]:
    """(exit status, stdout, the modules rhone's entry point added) of one fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", LEAN_PROBE, *args], capture_output=True, text=True, cwd=cwd, env=base_environ, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    output, marker, report = proc.stdout.rpartition(f"\n{MARKER}\n")
    assert marker, proc.stdout + proc.stderr
    status, added = report.splitlines()
    return int(status), output, set(added.split())


def warm_manifest_project(tmp_path):
    """A small project whose files the stat cache will trust, with simple ignore rules (no regex needed)."""
    import os
    import time

    project = tmp_path / "project"
    an_hour_ago = time.time() - 3600  # not "racy": the stat cache trusts these files
    for rel in ("app.py", "lib/util.py", "static/site.css", "run.sh", "lib/ünïcode.txt"):
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
        os.utime(path, (an_hour_ago, an_hour_ago))
    (project / ".gitignore").write_text("*.log\n/build\nnode_modules/\n")  # simple rules: no regex needed
    os.utime(project / ".gitignore", (an_hour_ago, an_hour_ago))
    return project


def test_a_warm_manifest_imports_exactly_its_own_modules(base_environ, tmp_path):
    project = warm_manifest_project(tmp_path)
    command = ["-C", str(project), "artifact", "manifest"]
    status, cold, first = lean_probe(base_environ, tmp_path, command)
    assert (status, cold.splitlines()[-1]) == (0, "hashed: 6 (0 from the stat cache)")
    assert {"hashlib", "json"} <= first  # the cold run really hashed and wrote the cache
    status, warm, modules = lean_probe(base_environ, tmp_path, command)
    assert (status, warm.splitlines()[-1]) == (0, "hashed: 0 (6 from the stat cache)")
    assert warm.splitlines()[0] == cold.splitlines()[0]  # the same digest
    assert modules == WARM_MANIFEST_MODULES, sorted(modules ^ WARM_MANIFEST_MODULES)


def test_a_warm_manifest_json_imports_exactly_its_own_modules(base_environ, tmp_path):
    # The whole document on a pipe: the same modules plus json's C string encoder (`_json`, for the root), not `json`
    # (with `re` and `enum`) nor a dict per file: the file list kept beside the stat cache is written as it is.
    project = warm_manifest_project(tmp_path)
    command = ["-C", str(project), "artifact", "manifest", "--json"]
    status, cold, first = lean_probe(base_environ, tmp_path, command)
    assert (status, json.loads(cold)["hashed"]) == (0, 6)
    assert {"hashlib", "tempfile"} <= first  # the cold run really hashed and kept the file list
    status, warm, modules = lean_probe(base_environ, tmp_path, command)
    assert (status, json.loads(warm)["hashed"]) == (0, 0)
    assert json.loads(warm)["manifest"] == json.loads(cold)["manifest"]
    expected = WARM_MANIFEST_MODULES | {"_json"}
    assert modules == expected, sorted(modules ^ expected)
