"""The artifact manifest (PRODUCT.md §4 "Artifacts and manifests"): determinism, canonical form, ignore rules,
refusals, the stat cache, bounded memory, validation of received manifests, and `rhone artifact manifest`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rhone_cli.artifacts import manifest as mf
from rhone_cli.artifacts.manifest import (
    build_manifest,
    canonical_bytes,
    digest_of,
    glob_to_regex,
    parse_rule,
    validate_manifest_document,
)
from rhone_cli.errors import RhoneError
from tests.conftest import VALID_TOML, assert_matches_schema

PAST = time.time() - 3600  # mtimes well before any cache write: not "racy"


def write(root: Path, rel: str, content: bytes | str = b"x", *, exec_bit: bool = False, mtime: float | None = None):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, 0o755 if exec_bit else 0o644)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def age(root: Path, when: float = PAST) -> None:
    """Set every mtime under root to `when` (so cache entries are trusted)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


def paths(root: Path, **kwargs) -> list[str]:
    return [f["path"] for f in build_manifest(root, use_cache=False, **kwargs).files]


def refused(root: Path, **kwargs) -> RhoneError:
    with pytest.raises(RhoneError) as info:
        build_manifest(root, **kwargs)
    assert info.value.code == "unsafe_path", info.value
    assert info.value.exit_code == 2
    return info.value


# -- determinism and canonical form ---------------------------------------------------------------------------------
TREE = {
    "app.py": b"print('hi')\n",
    "bin/start": b"#!/bin/sh\nexec python app.py\n",
    "static/css/site.css": b"body{}\n",
    "static/img/logo.png": bytes(range(256)) * 10,
    "z/empty": b"",
    "é/naïve.txt": "unicode\n",
}


def make_tree(root: Path, order: list[str], umask: int, mtime: float) -> None:
    old = os.umask(umask)
    try:
        for rel in order:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            content = TREE[rel]
            path.write_bytes(content.encode() if isinstance(content, str) else content)
            if rel == "bin/start":
                path.chmod(path.stat().st_mode | stat.S_IXUSR)
            os.utime(path, (mtime, mtime))
    finally:
        os.umask(old)


def test_same_tree_same_digest_whatever_the_order_mtimes_and_umask(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, list(TREE), 0o022, PAST)
    make_tree(b, list(reversed(TREE)), 0o077, PAST - 12345)
    ma, mb = build_manifest(a), build_manifest(b)
    assert ma.digest == mb.digest
    assert ma.document == mb.document
    assert [f["path"] for f in ma.files] == sorted(TREE)
    assert {f["path"]: f["mode"] for f in ma.files}["bin/start"] == "755"
    assert {f["path"]: f["mode"] for f in ma.files}["app.py"] == "644"  # 0o600 under umask 077 is still 644


def test_exec_bit_and_content_change_the_digest(tmp_path):
    make_tree(tmp_path, list(TREE), 0o022, PAST)
    before = build_manifest(tmp_path, use_cache=False).digest
    (tmp_path / "app.py").chmod(0o755)
    after_chmod = build_manifest(tmp_path, use_cache=False).digest
    assert after_chmod != before
    (tmp_path / "app.py").chmod(0o644)
    assert build_manifest(tmp_path, use_cache=False).digest == before
    (tmp_path / "app.py").chmod(0o654)  # group/other bits do not count
    assert build_manifest(tmp_path, use_cache=False).digest == before
    (tmp_path / "app.py").write_bytes(b"print('hj')\n")  # same size, one byte different
    assert build_manifest(tmp_path, use_cache=False).digest not in (before, after_chmod)


def test_canonical_json_and_digest_of_a_two_file_tree(tmp_path):
    write(tmp_path, "a.txt", b"hello\n")
    write(tmp_path, "bin/run", b"#!/bin/sh\necho hi\n", exec_bit=True)
    result = build_manifest(tmp_path, use_cache=False)
    expected = (
        b'{"files":['
        b'{"mode":"644","path":"a.txt","sha256":"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",'
        b'"size":6},'
        b'{"mode":"755","path":"bin/run","sha256":"299001868fb8c02fd431c336c6d058f5558c5dff5b5af5e6fe04b870a6a9cbba",'
        b'"size":18}'
        b'],"version":1}'
    )
    assert canonical_bytes(result.document) == expected
    assert result.digest == "sha256:1b9b4472fa545c32c6bc632c8f2d3849ebbf114590cfe5149a1b5b1a94ce424d"
    assert digest_of(result.document) == result.digest
    assert (result.file_count, result.total_size) == (2, 24)


def test_canonical_json_is_utf8_not_escaped(tmp_path):
    write(tmp_path, "é.txt", b"")
    doc = build_manifest(tmp_path, use_cache=False).document
    assert '"path":"é.txt"'.encode() in canonical_bytes(doc)


def test_paths_sort_by_code_point_not_by_tree(tmp_path):
    for rel in ("a/b", "a-b", "a.b", "B", "a/a"):
        write(tmp_path, rel)
    assert paths(tmp_path) == ["B", "a-b", "a.b", "a/a", "a/b"]


# -- ignore rules ---------------------------------------------------------------------------------------------------
def test_default_ignores(tmp_path):
    for rel in (
        ".git/HEAD",
        ".venv/bin/python",
        "venv/lib/x.py",
        "__pycache__/m.cpython-311.pyc",
        "pkg/__pycache__/m.pyc",
        "pkg/old.pyc",
        ".DS_Store",
        "pkg/.DS_Store",
        "node_modules/left-pad/index.js",
        "web/node_modules/x.js",
        ".rhone/link.json",
        "sub/.git",  # a submodule's .git file
        "keep.py",
        "pkg/keep.py",
        "pkg/.venvrc",
        "venv.txt",
    ):
        write(tmp_path, rel)
    assert paths(tmp_path) == ["keep.py", "pkg/.venvrc", "pkg/keep.py", "venv.txt"]


def test_rhoneignore_gitignore_syntax(tmp_path):
    (tmp_path / ".rhoneignore").write_text(
        "# comment\n"
        "\n"
        "*.log\n"
        "!keep.log\n"
        "build/\n"  # directories only
        "/top.txt\n"  # anchored
        "docs/**/*.tmp\n"
        "data?.csv\n"
        "img[0-9].png\n"
        "secret[!s].txt\n"
        "trailing.txt   \n"  # trailing spaces are ignored
        "\\#hash.txt\n"  # escaped leading #
        "**/gen/*.go\n"
    )
    for rel in (
        "a.log",
        "sub/b.log",
        "keep.log",
        "sub/keep.log",
        "build/out.bin",
        "sub/build/out.bin",
        "src/build",  # a file named build is not a directory
        "top.txt",
        "sub/top.txt",
        "docs/x.tmp",
        "docs/a/b/y.tmp",
        "other/z.tmp",
        "data1.csv",
        "data12.csv",
        "img7.png",
        "imgx.png",
        "secretx.txt",
        "secrets.txt",
        "trailing.txt",
        "#hash.txt",
        "app/gen/x.go",
        "gen/y.go",
        "app/gen/sub/z.go",
    ):
        write(tmp_path, rel)
    assert paths(tmp_path) == sorted(
        [
            ".rhoneignore",
            "keep.log",
            "sub/keep.log",
            "src/build",
            "sub/top.txt",
            "other/z.tmp",
            "data12.csv",
            "imgx.png",
            "secrets.txt",
            "app/gen/sub/z.go",
        ]
    )


def test_negation_cannot_reinclude_inside_an_ignored_directory(tmp_path):
    (tmp_path / ".rhoneignore").write_text("logs/\n!logs/important.log\n")
    write(tmp_path, "logs/important.log")
    write(tmp_path, "app.py")
    assert paths(tmp_path) == [".rhoneignore", "app.py"]
    # but a pattern for the files (not the directory) can be negated
    (tmp_path / ".rhoneignore").write_text("logs/*\n!logs/important.log\n")
    write(tmp_path, "logs/other.log")
    assert paths(tmp_path) == [".rhoneignore", "app.py", "logs/important.log"]


def test_rhoneignore_can_reinclude_a_default_but_never_rhone_state(tmp_path):
    (tmp_path / ".rhoneignore").write_text("!venv/\n!.rhone/\n")
    write(tmp_path, "venv/keep.py")
    write(tmp_path, ".rhone/manifest-cache.json", b"{}")
    assert paths(tmp_path) == [".rhoneignore", "venv/keep.py"]


def test_include_and_exclude_from_rhone_toml(tmp_path):
    for rel in ("app.py", "lib/util.py", "lib/README.md", "tests/test_app.py", "assets/a.css", "notes.md"):
        write(tmp_path, rel)
    assert paths(tmp_path, exclude=["tests/", "*.md", "!lib/README.md"]) == [
        "app.py",
        "assets/a.css",
        "lib/README.md",
        "lib/util.py",
    ]
    assert paths(tmp_path, include=["*.py"]) == ["app.py", "lib/util.py", "tests/test_app.py"]
    assert paths(tmp_path, include=["lib/", "assets/**"], exclude=["*.md"]) == ["assets/a.css", "lib/util.py"]
    assert paths(tmp_path, include=["**", "!tests/"]) == [
        "app.py",
        "assets/a.css",
        "lib/README.md",
        "lib/util.py",
        "notes.md",
    ]


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("*.py", ["a.py", ".py"], ["a.pyc", "a/b.py"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b", "x/a/b"]),
        ("**/b", ["b", "x/b", "x/y/b"], ["xb"]),
        ("a/**", ["a/b", "a/b/c"], ["a", "ab"]),
        ("**", ["a", "a/b"], []),
        ("a?c", ["abc"], ["ac", "a/c"]),
        ("[a-c]x", ["ax", "cx"], ["dx", "/x"]),
        ("[!a-c]x", ["dx"], ["ax", "/x"]),
        ("[]]", ["]"], ["a"]),
        ("a\\*b", ["a*b"], ["axb"]),
        ("a**b", ["ab", "axxb"], ["a/b"]),  # not a whole segment: like *
        ("[a", ["[a"], ["a"]),  # unclosed class: literal
        ("a+b(c)", ["a+b(c)"], ["aab(c)"]),  # regex metacharacters are literal
    ],
)
def test_glob_to_regex(pattern, matching, not_matching):
    import re

    regex = re.compile(glob_to_regex(pattern), re.DOTALL)
    for path in matching:
        assert regex.fullmatch(path), (pattern, path)
    for path in not_matching:
        assert not regex.fullmatch(path), (pattern, path)


GIT_RULES = """\
# comment
*.log
!keep.log
build/
/top.txt
docs/**/*.tmp
data?.csv
img[0-9].png
secret[!s].txt
trailing.txt  \x20
\\#hash.txt
**/gen/*.go
a/**/b
x/**
foo/*
!foo/bar
*.o
!important.o
[]]z
lib/*/cache/
dir_only/
**/deep
q\\*
"""
GIT_FILES = """\
a.log sub/b.log keep.log sub/keep.log build/out.bin sub/build/out.bin src/build top.txt sub/top.txt docs/x.tmp
docs/a/b/y.tmp other/z.tmp data1.csv data12.csv img7.png imgx.png secretx.txt secrets.txt trailing.txt #hash.txt
app/gen/x.go gen/y.go app/gen/sub/z.go a/b a/c/b a/c/d/b a/cb b x/1 x/2/3 xx foo/bar foo/baz foo/bar2/q m.o
important.o sub/important.o ]z lib/p/cache/c lib/p/q/cache/c dir_only/f n/dir_only/g deep/f k/deep l/m/deep/n q* qx
""".split()  # noqa: SIM905 (a list literal would be five times longer)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_rhoneignore_agrees_with_git(tmp_path):
    """The same rules as a .gitignore: the files git calls untracked-and-not-ignored are exactly the ones listed."""
    root = tmp_path / "repo"
    env = {"HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "PATH": os.environ.get("PATH", "")}
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    for rel in GIT_FILES:
        write(root, rel)
    (root / ".gitignore").write_text(GIT_RULES)
    (root / ".rhoneignore").write_text(GIT_RULES)
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        env=env,
    ).stdout.decode()
    by_git = sorted(p for p in listed.split("\0") if p)
    assert paths(root) == by_git
    assert 10 < len(by_git) < len(GIT_FILES)


def test_parse_rule_flags():
    rule = parse_rule("!/build/")
    assert (rule.negate, rule.dir_only, rule.basename) == (True, True, False)
    rule = parse_rule("*.log")
    assert (rule.negate, rule.dir_only, rule.basename) == (False, False, True)
    assert parse_rule("# comment") is None
    assert parse_rule("   ") is None
    assert parse_rule("\\!literal").regex.fullmatch("!literal")
    assert parse_rule("a\\ ").regex.fullmatch("a ")  # an escaped trailing space is kept


def test_invalid_rhoneignore_pattern_is_a_usage_error(tmp_path):
    (tmp_path / ".rhoneignore").write_text("ok\n[z-a]\n")
    with pytest.raises(RhoneError) as info:
        build_manifest(tmp_path)
    assert info.value.exit_code == 2
    assert ".rhoneignore:2" in info.value.message


# -- refusals -------------------------------------------------------------------------------------------------------
def test_symlink_to_a_file_outside_the_root_is_refused(tmp_path, rhone):
    root = tmp_path / "proj"
    write(root, "app.py")
    write(tmp_path, "secret.txt", b"top secret")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    error = refused(root)
    assert "leak.txt" in error.message and "outside the root" in error.message
    result = rhone("-C", str(root), "artifact", "manifest", "--json")
    assert result.exit_code == 2
    assert_matches_schema(result.json(), "error.schema.json")
    assert result.json()["error"]["code"] == "unsafe_path"
    result = rhone("-C", str(root), "artifact", "manifest")
    assert result.exit_code == 2
    assert "leak.txt" in result.stderr and result.stdout == ""


def test_symlink_to_a_directory_outside_the_root_is_refused(tmp_path, rhone):
    root = tmp_path / "proj"
    write(root, "app.py")
    write(tmp_path, "elsewhere/x.txt")
    os.symlink(tmp_path / "elsewhere", root / "data", target_is_directory=True)
    error = refused(root)
    assert "data" in error.message
    # relative targets that climb out are refused the same way
    os.unlink(root / "data")
    os.symlink("../elsewhere", root / "data")
    refused(root)
    result = rhone("-C", str(root), "artifact", "manifest", "--json")
    assert (result.exit_code, result.json()["error"]["code"]) == (2, "unsafe_path")


def test_an_ignored_escaping_symlink_is_not_an_error(tmp_path):
    root = tmp_path / "proj"
    write(root, "app.py")
    os.symlink(tmp_path, root / "outside")
    (root / ".rhoneignore").write_text("outside\n")
    assert paths(root) == [".rhoneignore", "app.py"]


def test_symlinks_inside_the_root_are_listed_with_their_targets_content(tmp_path):
    write(tmp_path, "real/run.sh", b"#!/bin/sh\n", exec_bit=True)
    write(tmp_path, "real/data.txt", b"data")
    os.symlink("real/run.sh", tmp_path / "run")
    os.symlink("real", tmp_path / "alias", target_is_directory=True)
    files = {f["path"]: f for f in build_manifest(tmp_path, use_cache=False).files}
    assert sorted(files) == ["alias/data.txt", "alias/run.sh", "real/data.txt", "real/run.sh", "run"]
    assert files["run"]["sha256"] == hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    assert (files["run"]["mode"], files["run"]["size"]) == ("755", 10)
    assert files["alias/data.txt"]["sha256"] == files["real/data.txt"]["sha256"]
    age(tmp_path)
    assert build_manifest(tmp_path).hashed_count == 5
    cached = build_manifest(tmp_path)
    assert (cached.hashed_count, cached.files) == (0, list(files.values()))


def test_the_root_itself_may_be_a_symlink(tmp_path):
    write(tmp_path, "real/a.txt")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert paths(tmp_path / "link") == ["a.txt"]


def test_symlink_loops_terminate(tmp_path):
    write(tmp_path, "a/file.txt")
    os.symlink("..", tmp_path / "a" / "up")  # a directory cycle through an ancestor
    error = refused(tmp_path, use_cache=False)
    assert "cycle" in error.message
    os.unlink(tmp_path / "a" / "up")
    write(tmp_path, "b/x.txt")
    os.symlink("../b", tmp_path / "a" / "to_b")
    os.symlink("../a", tmp_path / "b" / "to_a")  # a <-> b
    refused(tmp_path, use_cache=False)
    os.unlink(tmp_path / "b" / "to_a")
    os.unlink(tmp_path / "a" / "to_b")
    os.symlink("self", tmp_path / "self")  # a link to itself
    assert "symlink loop" in refused(tmp_path).message
    os.unlink(tmp_path / "self")
    os.symlink("missing", tmp_path / "dangling")
    assert "broken symlink" in refused(tmp_path).message


def test_symlink_into_rhone_state_is_refused(tmp_path):
    write(tmp_path, ".rhone/manifest-cache.json", b"{}")
    os.symlink(".rhone", tmp_path / "state")
    refused(tmp_path)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"bad\xff.txt", "not valid UTF-8"),
        (b"back\\slash.txt", "backslash"),
        (b"new\nline.txt", "control character"),
        (b"bell\x07.txt", "control character"),
        (b"C:evil", "Windows drive"),
    ],
)
def test_bad_names_are_refused(tmp_path, name, reason, rhone):
    write(tmp_path, "ok.txt")
    fd = os.open(os.path.join(os.fsencode(tmp_path), name), os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    error = refused(tmp_path)
    assert reason in error.message
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--json")
    assert (result.exit_code, result.json()["error"]["code"]) == (2, "unsafe_path")


def test_bad_names_inside_a_directory_and_ignored_bad_names(tmp_path):
    os.makedirs(os.path.join(os.fsencode(tmp_path), b"d\xe9"))  # latin-1 directory name
    refused(tmp_path)
    (tmp_path / ".rhoneignore").write_text("d*\n")
    assert paths(tmp_path) == [".rhoneignore"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_fifo_is_refused_without_blocking(tmp_path, use_cache):
    write(tmp_path, "ok.txt")
    os.mkfifo(tmp_path / "pipe")
    error = refused(tmp_path, use_cache=use_cache)
    assert "fifo" in error.message


def test_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "s.sock"
    if len(str(path)) > 100:
        pytest.skip("socket path too long")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert "socket" in refused(tmp_path).message


def test_too_many_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "MAX_FILES", 3)
    for i in range(4):
        write(tmp_path, f"f{i}")
    with pytest.raises(RhoneError) as info:
        build_manifest(tmp_path)
    assert (info.value.code, info.value.exit_code) == ("too_many_files", 2)


# -- the stat cache -------------------------------------------------------------------------------------------------
def make_files(root: Path, n: int = 20) -> None:
    for i in range(n):
        write(root, f"dir{i % 3}/file{i}.txt", f"content {i}\n" * (i + 1), mtime=PAST)


def test_cache_second_run_hashes_nothing_and_a_touched_file_exactly_once(tmp_path):
    make_files(tmp_path)
    first = build_manifest(tmp_path)
    assert first.hashed_count == 20
    assert (tmp_path / ".rhone" / "manifest-cache.json").is_file()
    second = build_manifest(tmp_path)
    assert second.hashed_count == 0
    assert second.digest == first.digest
    write(tmp_path, "dir1/file1.txt", "changed!\n", mtime=PAST + 10)
    third = build_manifest(tmp_path)
    assert third.hashed_count == 1
    assert third.digest != first.digest
    assert build_manifest(tmp_path).hashed_count == 0
    # a metadata-only change (same content, new mtime) rehashes that one file too, and the digest stays
    os.utime(tmp_path / "dir2" / "file2.txt", (PAST + 20, PAST + 20))
    fourth = build_manifest(tmp_path)
    assert (fourth.hashed_count, fourth.digest) == (1, third.digest)


def test_cache_notices_content_changes_that_keep_size_and_mtime(tmp_path):
    make_files(tmp_path)
    build_manifest(tmp_path)
    path = tmp_path / "dir0" / "file0.txt"
    before = path.stat()
    path.write_bytes(b"CONTENT 0\n")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: only ctime moved
    result = build_manifest(tmp_path)
    assert result.hashed_count == 1
    assert result.digest == build_manifest(tmp_path, use_cache=False).digest


def cached_paths(root: Path) -> set[str]:
    """The paths the stat cache under `root` holds an entry for."""
    records = json.loads((root / ".rhone" / "manifest-cache.json").read_text())["directories"]
    return {prefix + line.split("\0")[0] for prefix, (lines, _hashes) in records.items() for line in lines.splitlines()}


def test_an_unchanged_directory_is_known_as_a_whole(tmp_path, monkeypatch):
    """A directory whose files' stats are exactly its cache record's is known without a lookup per file; one that
    changed is looked at file by file, and its new record matches as a whole again on the next run."""
    make_files(tmp_path)
    write(tmp_path, "top.txt", mtime=PAST)  # the top level is always looked at file by file
    build_manifest(tmp_path)
    looked_up: list[str] = []
    known = mf._Cache.known
    monkeypatch.setattr(mf._Cache, "known", lambda cache, prefix: looked_up.append(prefix) or known(cache, prefix))
    reference = build_manifest(tmp_path, use_cache=False)
    warm = build_manifest(tmp_path)
    assert (warm.hashed_count, looked_up) == (0, [""])
    assert (warm.digest, warm.files, warm.file_count, warm.total_size) == (
        reference.digest,
        reference.files,
        reference.file_count,
        reference.total_size,
    )
    write(tmp_path, "dir1/file4.txt", "changed", mtime=PAST)
    looked_up.clear()
    changed = build_manifest(tmp_path)
    assert (changed.hashed_count, sorted(looked_up)) == (1, ["", "dir1/"])
    assert changed.digest == build_manifest(tmp_path, use_cache=False).digest != reference.digest
    looked_up.clear()
    again = build_manifest(tmp_path)
    assert (again.hashed_count, looked_up, again.digest) == (0, [""], changed.digest)


def test_new_and_removed_files(tmp_path):
    make_files(tmp_path)
    build_manifest(tmp_path)
    write(tmp_path, "new.txt", mtime=PAST)
    (tmp_path / "dir0" / "file3.txt").unlink()
    result = build_manifest(tmp_path)
    assert result.hashed_count == 1
    assert result.digest == build_manifest(tmp_path, use_cache=False).digest
    assert "dir0/file3.txt" not in cached_paths(tmp_path) and "new.txt" in cached_paths(tmp_path)
    # removing a file changes the digest even though nothing needs hashing (the cached digest is not reused)
    (tmp_path / "dir1" / "file4.txt").unlink()
    result = build_manifest(tmp_path)
    assert result.hashed_count == 0
    assert result.digest == build_manifest(tmp_path, use_cache=False).digest
    # and a chmod is a stat change: that file is looked at again and the digest follows the exec bit
    (tmp_path / "dir2" / "file5.txt").chmod(0o755)
    result = build_manifest(tmp_path)
    assert result.hashed_count == 1
    assert result.digest == build_manifest(tmp_path, use_cache=False).digest


def test_cached_digest_is_reused_only_for_the_same_entries(tmp_path):
    make_files(tmp_path)
    first = build_manifest(tmp_path)
    cache = json.loads((tmp_path / ".rhone" / "manifest-cache.json").read_text())
    assert cache["digest"] == first.digest
    second = build_manifest(tmp_path)
    assert second.hashed_count == 0 and second.digest == first.digest
    # excluding a file by rule (no file changed) must not reuse the digest of the larger manifest
    third = build_manifest(tmp_path, exclude=["file0.txt"])
    assert third.digest == build_manifest(tmp_path, use_cache=False, exclude=["file0.txt"]).digest != first.digest


def test_racy_entries_are_rehashed(tmp_path):
    # mtime an hour ahead: within RACY_NS of (indeed after) any cache write, however slowly the builds below run
    ahead = time.time_ns() + 3600 * 1_000_000_000
    for i in range(5):
        write(tmp_path, f"fresh{i}.txt", f"{i}")
        os.utime(tmp_path / f"fresh{i}.txt", ns=(ahead, ahead))
    assert build_manifest(tmp_path).hashed_count == 5
    assert build_manifest(tmp_path).hashed_count == 5  # still racy: not trusted, even though the stat matches
    # Exactly the rule: an entry is trusted only when its mtime is at least RACY_NS before the cache was written.
    mtime = int(PAST) * 1_000_000_000
    for i in range(5):
        os.utime(tmp_path / f"fresh{i}.txt", ns=(mtime, mtime))
    assert build_manifest(tmp_path).hashed_count == 5
    cache_file = tmp_path / ".rhone" / "manifest-cache.json"
    cache = json.loads(cache_file.read_text())
    for offset, expected in ((mf.RACY_NS - 1, 5), (0, 5), (-1, 5), (mf.RACY_NS, 0), (100 * mf.RACY_NS, 0)):
        cache_file.write_text(json.dumps({**cache, "written_ns": mtime + offset}))
        assert build_manifest(tmp_path).hashed_count == expected, offset


def test_no_cache_hashes_everything_and_leaves_the_cache_alone(tmp_path, rhone):
    make_files(tmp_path)
    build_manifest(tmp_path)
    cache_file = tmp_path / ".rhone" / "manifest-cache.json"
    before = cache_file.read_bytes()
    assert build_manifest(tmp_path, use_cache=False).hashed_count == 20
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--no-cache", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["hashed"] == 20
    assert cache_file.read_bytes() == before
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--json")
    assert result.json()["hashed"] == 0


def test_damaged_cache_is_ignored(tmp_path):
    make_files(tmp_path)
    build_manifest(tmp_path)
    cache_file = tmp_path / ".rhone" / "manifest-cache.json"
    for damage in (
        b"not json",
        b"[]",
        b'"text"',
        b'{"version": 2}',
        b'{"version": 99, "written_ns": 1, "directories": {}}',
        b'{"version": 2, "written_ns": 1, "directories": {"dir0/": 5}}',
        b'{"version": 2, "written_ns": 1, "directories": {"dir0/": ["file0.txt\\u00001:2:3:4:5\\n"]}}',
        b'{"version": 2, "written_ns": 1, "directories": {"dir0/": ["file0.txt\\u00001:2:3:4:5\\n", "ab"]}}',
        b'{"version": 2, "written_ns": "1", "directories": {}}',
    ):
        cache_file.write_bytes(damage)
        assert build_manifest(tmp_path).hashed_count == 20
    cache = json.loads(cache_file.read_text())
    cache["directories"] = {k: [lines, "Z" * len(hashes)] for k, (lines, hashes) in cache["directories"].items()}
    cache_file.write_text(json.dumps(cache))
    result = build_manifest(tmp_path)
    assert result.hashed_count == 20
    validate_manifest_document(result.document)
    assert sorted(os.listdir(tmp_path / ".rhone")) == ["manifest-cache.json"]  # no temporary files left behind


def test_unwritable_state_dir_is_not_fatal(tmp_path):
    make_files(tmp_path, 3)
    (tmp_path / ".rhone").write_text("not a directory")
    result = build_manifest(tmp_path)
    assert result.hashed_count == 3
    assert result.cache_warning
    assert ".rhone" not in [f["path"] for f in result.files]


# -- bounded memory -------------------------------------------------------------------------------------------------
def test_hashing_streams_with_bounded_memory(tmp_path):
    import tracemalloc

    size = 64 * 1024 * 1024
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(size)  # sparse: 64 MiB of zeros without using the disk
    expected = hashlib.sha256()
    zeros = bytes(1 << 20)
    for _ in range(64):
        expected.update(zeros)
    del zeros
    tracemalloc.start()
    try:
        result = build_manifest(tmp_path, use_cache=False)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    assert result.files == [{"path": "big.bin", "size": size, "mode": "644", "sha256": expected.hexdigest()}]


# -- validation of received manifests -------------------------------------------------------------------------------
SHA = "a" * 64


def entry(path: str, **overrides):
    return {"path": path, "size": 1, "mode": "644", "sha256": SHA, **overrides}


def test_validate_accepts_a_built_manifest(tmp_path):
    make_tree(tmp_path, list(TREE), 0o022, PAST)
    validate_manifest_document(build_manifest(tmp_path).document)
    validate_manifest_document({"version": 1, "files": []})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 1, "files": [entry("../etc/passwd")]}, "not normalized"),
        ({"version": 1, "files": [entry("a/../b")]}, "not normalized"),
        ({"version": 1, "files": [entry("./a")]}, "not normalized"),
        ({"version": 1, "files": [entry("/etc/passwd")]}, "absolute"),
        ({"version": 1, "files": [entry("C:/x")]}, "absolute"),
        ({"version": 1, "files": [entry("a//b")]}, "empty segment"),
        ({"version": 1, "files": [entry("a/")]}, "empty segment"),
        ({"version": 1, "files": [entry("")]}, "non-empty"),
        ({"version": 1, "files": [entry("a\\b")]}, "backslash"),
        ({"version": 1, "files": [entry("a\nb")]}, "control character"),
        ({"version": 1, "files": [entry("a\ud800")]}, "UTF-8"),
        ({"version": 1, "files": [entry("x" * 1025)]}, "longer than"),
        ({"version": 1, "files": [entry("a"), entry("a")]}, "duplicate"),
        ({"version": 1, "files": [entry("b"), entry("a")]}, "not sorted"),
        ({"version": 1, "files": [entry("a"), entry("a/b")]}, "inside it"),
        ({"version": 1, "files": [entry("a", sha256="A" * 64)]}, "lowercase hex"),
        ({"version": 1, "files": [entry("a", sha256="a" * 63)]}, "lowercase hex"),
        ({"version": 1, "files": [entry("a", sha256="g" * 64)]}, "lowercase hex"),
        ({"version": 1, "files": [entry("a", mode="777")]}, "mode"),
        ({"version": 1, "files": [entry("a", mode=644)]}, "mode"),
        ({"version": 1, "files": [entry("a", size=-1)]}, "size"),
        ({"version": 1, "files": [entry("a", size=True)]}, "size"),
        ({"version": 1, "files": [entry("a", size=1.0)]}, "size"),
        ({"version": 1, "files": [{**entry("a"), "extra": 1}]}, "exactly the keys"),
        ({"version": 1, "files": [["a", 1, "644", SHA]]}, "must be an object"),
        ({"version": 2, "files": []}, "version"),
        ({"version": True, "files": []}, "version"),
        ({"version": 1}, "exactly the keys"),
        ({"version": 1, "files": {}}, "must be a list"),
        ([], "JSON object"),
    ],
)
def test_validate_rejects(doc, message):
    with pytest.raises(ValueError) as info:
        validate_manifest_document(doc)
    assert message in str(info.value), str(info.value)


def test_validate_limits_the_file_count(monkeypatch):
    monkeypatch.setattr(mf, "MAX_FILES", 2)
    with pytest.raises(ValueError, match="too many files"):
        validate_manifest_document({"version": 1, "files": [entry("a"), entry("b"), entry("c")]})


# -- the command ----------------------------------------------------------------------------------------------------
def test_command_json_matches_the_schema(tmp_path, rhone):
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    write(tmp_path, "app.py", b"print('hi')\n", mtime=PAST)
    write(tmp_path, "bin/start", b"#!/bin/sh\n", exec_bit=True, mtime=PAST)
    os.utime(tmp_path / "rhone.toml", (PAST, PAST))
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "artifact-manifest.schema.json")
    expected = build_manifest(tmp_path, use_cache=False)
    assert doc["digest"] == expected.digest
    assert doc["manifest"] == expected.document
    assert (doc["file_count"], doc["total_size"], doc["hashed"]) == (3, expected.total_size, 3)
    assert doc["root"] == str(tmp_path.resolve())
    again = rhone("artifact", "manifest", "--json", cwd=tmp_path)
    assert (again.json()["digest"], again.json()["hashed"]) == (doc["digest"], 0)


def test_command_human_output(tmp_path, rhone):
    write(tmp_path, "a.txt", b"hello\n")
    result = rhone("-C", str(tmp_path), "artifact", "manifest")
    assert result.exit_code == 0, result.stderr
    digest = build_manifest(tmp_path, use_cache=False).digest
    assert digest in result.stdout
    assert "files:" in result.stdout and "1" in result.stdout
    assert "6 bytes" in result.stdout


def test_command_root_is_the_nearest_rhone_toml_and_applies_its_globs(tmp_path, rhone):
    (tmp_path / "rhone.toml").write_text(VALID_TOML + '\n[build]\nexclude = ["tests/"]\n')
    write(tmp_path, "app.py")
    write(tmp_path, "tests/test_app.py")
    write(tmp_path, "sub/deeper/x.txt")
    result = rhone("artifact", "manifest", "--json", cwd=tmp_path / "sub" / "deeper")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["root"] == str(tmp_path.resolve())
    assert [f["path"] for f in doc["manifest"]["files"]] == ["app.py", "rhone.toml", "sub/deeper/x.txt"]


def test_command_invalid_rhone_toml_is_exit_2(tmp_path, rhone):
    (tmp_path / "rhone.toml").write_text("[project\n")
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--json")
    assert result.exit_code == 2


def test_prebuilt(tmp_path, rhone):
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--prebuilt", "--json")
    assert (result.exit_code, result.json()["error"]["code"]) == (2, "config_not_found")
    (tmp_path / "rhone.toml").write_text(VALID_TOML + '\n[build]\noutput = "dist"\n')
    write(tmp_path, "src/app.py")
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--prebuilt", "--json")
    assert result.exit_code == 2
    assert_matches_schema(result.json(), "error.schema.json")
    assert result.json()["error"]["code"] == "build_output_missing"
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--prebuilt")
    assert result.exit_code == 2 and "dist" in result.stderr
    write(tmp_path, "dist/app.bin", b"\x7fELF", exec_bit=True)
    result = rhone("-C", str(tmp_path), "artifact", "manifest", "--prebuilt", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["root"] == str((tmp_path / "dist").resolve())
    assert doc["manifest"]["files"] == [
        {"path": "app.bin", "size": 4, "mode": "755", "sha256": hashlib.sha256(b"\x7fELF").hexdigest()}
    ]


def test_prebuilt_output_symlinked_outside_the_project_is_refused(tmp_path, rhone):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "rhone.toml").write_text(VALID_TOML + '\n[build]\noutput = "dist"\n')
    write(tmp_path, "elsewhere/x")
    os.symlink(tmp_path / "elsewhere", project / "dist")
    result = rhone("-C", str(project), "artifact", "manifest", "--prebuilt", "--json")
    assert (result.exit_code, result.json()["error"]["code"]) == (2, "unsafe_path")


def test_manifest_module_and_command_stay_light():
    # The manifest module uses the standard library only; the command module imports it only when it runs.
    probe = (
        "import sys, json; import rhone_cli.commands.artifact; a = 'rhone_cli.artifacts.manifest' in sys.modules; "
        "import rhone_cli.artifacts.manifest; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'httpx', 'rich', 'keyring')]; "
        "print(json.dumps([a, heavy]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [False, []]
