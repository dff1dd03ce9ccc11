"""Ignore rules users expect (issue 11): nested .gitignore files with negations, .rhoneignore winning over them,
.env files kept out unless re-included by name, and `rhone artifact manifest --explain PATH`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhone_cli.artifacts.manifest import build_manifest, explain
from rhone_cli.errors import RhoneError
from tests.conftest import VALID_TOML, assert_matches_schema


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def listed(root: Path, **kwargs) -> list[str]:
    return [f["path"] for f in build_manifest(root, use_cache=False, **kwargs).files]


def test_gitignore_at_the_root_keeps_a_gitignored_database_and_env_out(tmp_path: Path) -> None:
    """The issue's report: a local .env and a gitignored instance/app.sqlite were uploaded."""
    root = tree(tmp_path, {".gitignore": "instance/\n", "app.py": "", ".env": "SECRET=1", "instance/app.sqlite": "db"})
    assert listed(root) == [".gitignore", "app.py"]


def test_nested_gitignore_applies_below_its_directory_only(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "web/.gitignore": "*.tmp\n/build\n",
            "web/a.tmp": "",
            "web/deep/b.tmp": "",
            "web/build/out.js": "",
            "web/deep/build/kept.js": "",  # `/build` is anchored to web/: a deeper build/ stays
            "c.tmp": "",  # above web/: its rules do not reach here
        },
    )
    assert listed(root) == ["c.tmp", "web/.gitignore", "web/deep/build/kept.js"]


def test_a_deeper_gitignore_negation_wins_over_its_parent(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            ".gitignore": "*.log\n",
            "logs/.gitignore": "!keep.log\n",
            "logs/keep.log": "",
            "logs/drop.log": "",
            "top.log": "",
        },
    )
    assert listed(root) == [".gitignore", "logs/.gitignore", "logs/keep.log"]


def test_rhoneignore_wins_over_gitignore(tmp_path: Path) -> None:
    """A gitignored build output can be uploaded: .rhoneignore's negation comes after every .gitignore rule."""
    root = tree(
        tmp_path,
        {".gitignore": "dist/\nnotes.md\n", ".rhoneignore": "!dist/\n", "dist/app.js": "", "notes.md": ""},
    )
    assert listed(root) == [".gitignore", ".rhoneignore", "dist/app.js"]


def test_nested_rhoneignore_applies_below_its_directory(tmp_path: Path) -> None:
    root = tree(tmp_path, {"a/.rhoneignore": "fixtures/\n", "a/fixtures/x": "", "b/fixtures/y": ""})
    assert listed(root) == ["a/.rhoneignore", "b/fixtures/y"]


def test_an_ignored_directory_is_not_entered_so_its_gitignore_cannot_re_include(tmp_path: Path) -> None:
    root = tree(tmp_path, {".gitignore": "vendor/\n", "vendor/.gitignore": "!*\n", "vendor/lib.py": ""})
    assert listed(root) == [".gitignore"]


@pytest.mark.parametrize("name", [".env", ".env.local", ".env.production", ".envrc", "sub/.env"])
def test_env_files_stay_out_by_default(tmp_path: Path, name: str) -> None:
    root = tree(tmp_path, {name: "TOKEN=abc", "app.py": ""})
    assert listed(root) == ["app.py"]


def test_an_env_file_is_uploaded_only_when_re_included_by_name(tmp_path: Path) -> None:
    root = tree(tmp_path, {".env.example": "X=", ".env": "X=secret", "app.py": ""})
    assert listed(root, exclude=["!.env.example"]) == [".env.example", "app.py"]
    (tmp_path / ".rhoneignore").write_text("!.env.example\n")
    assert listed(root) == [".env.example", ".rhoneignore", "app.py"]
    assert ".env" not in listed(root)


def test_build_exclude_still_wins_over_every_ignore_file(tmp_path: Path) -> None:
    root = tree(tmp_path, {".rhoneignore": "!keep.txt\n", "keep.txt": ""})
    assert listed(root, exclude=["keep.txt"]) == [".rhoneignore"]


def test_a_broken_ignore_file_in_a_subdirectory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(RhoneError) as info:
        build_manifest(tmp_path, use_cache=False)
    assert (info.value.code, info.value.exit_code) == ("invalid_ignore_file", 2)


def test_a_nested_gitignore_linking_outside_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "rules").write_text("*\n")
    root = tree(tmp_path / "root", {"sub/x": ""})
    (root / "sub" / ".gitignore").symlink_to(outside / "rules")
    with pytest.raises(RhoneError) as info:
        build_manifest(root, use_cache=False)
    assert info.value.code == "unsafe_path" and "sub/.gitignore" in info.value.message


def test_explain_names_the_deciding_rule_and_where_it_is_written(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            ".gitignore": "instance/\n*.log\n!keep.log\n",
            "sub/.gitignore": "secret.txt\n",
            "sub/secret.txt": "",
            "sub/keep.log": "",
            "sub/instance/app.sqlite": "",
            ".env": "",
            "app.py": "",
        },
    )
    cases = {
        ".env": (False, ".env", "<defaults>:"),
        "sub/secret.txt": (False, "secret.txt", "sub/.gitignore:1"),
        "sub/keep.log": (True, "!keep.log", ".gitignore:3"),
        "sub/instance/app.sqlite": (False, "instance/", ".gitignore:1"),
    }
    for path, (included, pattern, source) in cases.items():
        verdict = explain(root, path)
        assert verdict["included"] is included, verdict
        assert verdict["rule"]["pattern"] == pattern and verdict["rule"]["source"].startswith(source), verdict
    assert "its directory sub/instance/" in explain(root, "sub/instance/app.sqlite")["reason"]
    plain = explain(root, "app.py")
    assert plain == {"path": "app.py", "included": True, "reason": "no ignore rule matches it", "rule": None}
    # Every verdict agrees with the manifest itself.
    files = set(listed(root))
    for path in [*cases, "app.py"]:
        assert explain(root, path)["included"] is (path in files)


def test_explain_reports_build_include_and_the_state_dir(tmp_path: Path) -> None:
    root = tree(tmp_path, {"src/a.py": "", "docs/b.md": ""})
    verdict = explain(root, "docs/b.md", include=["src/**"])
    assert verdict["included"] is False and "build.include" in verdict["reason"]
    assert explain(root, ".rhone/manifest-cache.json")["included"] is False
    with pytest.raises(RhoneError) as info:
        explain(root, "../etc/passwd")
    assert (info.value.code, info.value.exit_code) == ("invalid_path", 2)


def test_rhone_artifact_manifest_explain(rhone, tmp_path: Path) -> None:
    tree(tmp_path, {"rhone.toml": VALID_TOML, ".gitignore": "*.sqlite\n", "db.sqlite": "", "app.py": ""})
    result = rhone("artifact", "manifest", "--explain", "db.sqlite", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert_matches_schema(document, "artifact-manifest-explain.schema.json")
    assert document["included"] is False and document["rule"] == {
        "pattern": "*.sqlite",
        "source": ".gitignore:1",
        "negated": False,
    }
    human = rhone("artifact", "manifest", "--explain", str(tmp_path / "app.py"), cwd=tmp_path / ".")
    assert human.exit_code == 0 and human.stdout.strip() == "app.py: included: no ignore rule matches it"
    outside = rhone("artifact", "manifest", "--explain", "/etc/passwd", cwd=tmp_path)
    assert outside.exit_code == 2 and "not inside" in outside.stderr
