"""Rules the test suite and the benchmarks live by (README, "Tests"): servers bind port 0 and report the port they
got, and everything under tests/e2e/ is the slow tier."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".ini", ".yml", ".yaml"}
# Picking a free port and closing it before the real server binds it races with everyone else on the machine.
PICK_A_FREE_PORT = re.compile(r"def _?free_port\b|free_ports\(")


def repository_files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        if SKIPPED_DIRS.intersection(path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES:
            found.append(path)
    return found


def test_nothing_picks_a_free_port_and_closes_it() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in repository_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if PICK_A_FREE_PORT.search(line)
    ]
    assert offenders == [], "bind port 0 and read the port the server reports instead:\n" + "\n".join(offenders)


def test_the_rule_sees_what_it_forbids() -> None:
    free = "free_"  # the forbidden lines, assembled here so that this file does not hold them
    assert PICK_A_FREE_PORT.search(f"def {free}port() -> int:")
    assert PICK_A_FREE_PORT.search(f"def _{free}port():")
    assert PICK_A_FREE_PORT.search(f"port, edge_port = {free}ports(2)")
    assert not PICK_A_FREE_PORT.search(f"def {free}portal():")


def test_everything_under_tests_e2e_is_slow() -> None:
    """`pytest -m "not slow"` (the everyday loop) leaves out every test under tests/e2e/ — by its directory's conftest,
    not by marks each file must remember — and nothing else."""
    from tests.e2e.conftest import E2E_DIR, pytest_collection_modifyitems

    class Item:
        def __init__(self, path: Path) -> None:
            self.path, self.marks = path, []

        def add_marker(self, mark) -> None:
            self.marks.append(mark.name)

    items = [
        Item(E2E_DIR / "test_shutdown.py"),
        Item(E2E_DIR / "sub" / "test_x.py"),
        Item(REPO / "tests" / "test_x.py"),
    ]
    pytest_collection_modifyitems(items)
    assert [item.marks for item in items] == [["slow"], ["slow"], []]
    # No file there marks itself slow (other marks, such as an xdist group, are theirs to set).
    assert not [p.name for p in E2E_DIR.glob("test_*.py") if "mark.slow" in p.read_text()]


def test_two_tests_never_share_a_node_id() -> None:
    """The parallel run keeps one test per node id: a collection with duplicates is refused (tests/conftest.py)."""
    from tests.conftest import duplicate_node_ids

    assert duplicate_node_ids(["a.py::t[1]", "a.py::t", "a.py::t[2]", "a.py::t", "b.py::t"]) == ["a.py::t"]
    assert duplicate_node_ids(["a.py::t[1]", "a.py::t[2]"]) == []


def test_ci_runs_the_readme_test_command_in_parallel() -> None:
    """`.ci/run` runs exactly the README's test command, and it runs the suite in parallel with `--dist loadgroup`
    (which keeps an `xdist_group` on one worker; plain `load` would scatter it)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running the tests", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\.venv/bin/python -m pytest .*$", section, re.M)
    full = commands[0]
    assert re.search(r" -n \d+ --dist loadgroup\b", full), full
    assert f'"$VENV/bin/python" -m pytest {full.split(" -m pytest ", 1)[1]}' in (REPO / ".ci" / "run").read_text()
    assert f'{full} -m "not slow"' in commands, commands
